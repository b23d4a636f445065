// One upstream fetch for a missing object, shared by every request that wants it while it is on its way.
import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { open, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { IncomingMessage, ClientRequest } from 'node:http';
import type { ContentStore } from './contentStore.ts';
import type { SpaceKeeper, Reservation } from './spaceKeeper.ts';
import type { CacheMetrics } from './cacheMetrics.ts';
import type { Logger } from './log.ts';
import type { UpstreamTarget } from './upstreamChain.ts';

export type FlightState = 'connecting' | 'filling' | 'complete' | 'failed';

export interface FlightSpec {
  key: string;
  /** Known for content-addressed requests; URL-mode objects learn their hash when complete. */
  expectedSha256?: string | undefined;
  targets: UpstreamTarget[];
  /** Called once the object is published under its hash (URL mode binds its key here). */
  onPublished?: ((sha256: string) => void) | undefined;
}

export interface FlightDeps {
  store: ContentStore;
  space: SpaceKeeper;
  metrics: CacheMetrics;
  log: Logger;
  idleTimeoutMs: number;
  httpAgent: http.Agent;
  httpsAgent: https.Agent;
}

/** A flight failure that must not be retried on another upstream. */
export class FlightError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

const READ_CHUNK = 1 << 20;
// Socket reads are ~64 KiB; writing and waking followers per read costs more than the bytes themselves.
const WRITE_BATCH = 4 << 20;
// In pass-through mode nothing is on disk beyond fileEnd, so slow readers hold the upstream back.
const PASS_THROUGH_BUFFER = 16 << 20;

/** A request's interest in a flight; held from the moment it joins until its response is over. */
export interface FlightTicket {
  pos: number;
  released: boolean;
}

export class FillFlight {
  readonly key: string;
  /** Known up front for content-addressed requests; URL mode may learn it from a parent cache's ETag. */
  expectedSha256: string | undefined;
  state: FlightState = 'connecting';
  size: number | undefined;
  contentType = 'application/octet-stream';
  sha256: string | undefined;
  error: Error | undefined;
  /** True once the bytes are no longer being stored (quota, disk full): readers get them from memory. */
  passThrough = false;
  stored = false;
  /** Settles when the flight is complete (published or passed through) or failed. */
  readonly finished: Promise<void>;

  readonly #spec: FlightSpec;
  readonly #deps: FlightDeps;
  readonly #tempPath: string;
  readonly #hash = createHash('sha256');
  #fh: FileHandle | undefined;
  #reservation: Reservation | undefined;
  #written = 0;
  #received = 0;
  #fileEnd = 0;
  #verified = false;
  #validator: string | undefined;
  #chunks: Array<{ offset: number; data: Buffer }> = [];
  #tickets = new Set<FlightTicket>();
  #request: ClientRequest | undefined;
  #cancelled: Error | undefined;
  #wake: () => void = () => {};
  #changed: Promise<void>;
  #sizeKnown: () => void = () => {};
  readonly #ready: Promise<void>;

  constructor(spec: FlightSpec, deps: FlightDeps) {
    this.key = spec.key;
    this.expectedSha256 = spec.expectedSha256;
    this.#spec = spec;
    this.#deps = deps;
    this.#tempPath = deps.store.newTempPath();
    this.#changed = this.#nextChange();
    this.#ready = new Promise<void>((resolve) => (this.#sizeKnown = resolve));
    this.finished = this.#run();
    // Readers observe failure through their own awaits; this only keeps the rejection from being unhandled.
    this.finished.catch(() => undefined);
  }

  /** Strong validator clients may see: only the hash is strong, and only it survives across layers. */
  get etag(): string | undefined {
    const sha = this.sha256 ?? this.expectedSha256;
    return sha ? `"${sha}"` : undefined;
  }

  get receivedBytes(): number {
    return this.#received;
  }

  #nextChange(): Promise<void> {
    return new Promise<void>((resolve) => (this.#wake = resolve));
  }

  #notify(): void {
    const wake = this.#wake;
    this.#changed = this.#nextChange();
    wake();
  }

  /** Resolves once the size is known and bytes can be served, rejects if the flight fails first. */
  async ready(): Promise<void> {
    await Promise.race([this.#ready, this.finished]);
    if (this.state === 'failed') throw this.error ?? new Error('fill failed');
  }

  cancel(reason: Error): void {
    this.#cancelled ??= reason;
    this.#request?.destroy(reason);
    this.#notify();
  }

  async #run(): Promise<void> {
    const { metrics, log } = this.#deps;
    metrics.counters.fillsStarted++;
    try {
      await this.#fetchWithFailover();
      await this.#finish();
      this.state = 'complete';
      this.#sizeKnown();
      if (this.stored) metrics.counters.fillsPublished++;
      log.info('fill complete', { key: this.key, sha256: this.sha256, size: this.size, stored: this.stored });
    } catch (err) {
      this.error = err instanceof Error ? err : new Error(String(err));
      this.state = 'failed';
      metrics.counters.fillsFailed++;
      log.warn('fill failed', { key: this.key, error: this.error.message });
      await this.#dropTemp();
      throw this.error;
    } finally {
      this.#deps.space.release(this.#reservation);
      this.#reservation = undefined;
      this.#notify();
      await this.#closeIfIdle();
    }
  }

  async #fetchWithFailover(): Promise<void> {
    const targets = this.#spec.targets;
    if (targets.length === 0) throw new FlightError('NO_UPSTREAM', 'no upstream for this object');
    // Each target gets two chances; the list is walked in order, a failure moving on to the next one.
    const attempts = Math.max(2, targets.length * 2);
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (this.#cancelled) throw this.#cancelled;
      const target = targets[attempt % targets.length]!;
      try {
        await this.#fetchFrom(target);
        return;
      } catch (err) {
        if (err instanceof FlightError || this.#cancelled) throw this.#cancelled ?? err;
        lastError = err instanceof Error ? err : new Error(String(err));
        this.#deps.metrics.counters.upstreamFailures++;
        this.#deps.log.warn('upstream attempt failed', {
          key: this.key,
          upstream: target.url.origin,
          via: target.via,
          offset: this.#received,
          error: lastError.message,
        });
      }
    }
    throw lastError ?? new Error('all upstreams failed');
  }

  #send(target: UpstreamTarget): Promise<IncomingMessage> {
    const headers: Record<string, string | string[]> = { ...target.headers, 'accept-encoding': 'identity' };
    // Resuming: ask only for what is missing; If-Range makes a changed object come back whole (200).
    if (this.#received > 0) {
      headers.range = `bytes=${this.#received}-`;
      if (this.#validator) headers['if-range'] = this.#validator;
    }
    const secure = target.url.protocol === 'https:';
    const lib = secure ? https : http;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = lib.get(target.url, { headers, agent: secure ? this.#deps.httpsAgent : this.#deps.httpAgent });
      this.#request = req;
      req.setTimeout(this.#deps.idleTimeoutMs, () => req.destroy(new Error('upstream idle timeout')));
      req.once('response', resolve);
      req.once('error', reject);
    });
  }

  async #fetchFrom(target: UpstreamTarget): Promise<void> {
    if (this.#received > 0 && !this.#validator && !this.expectedSha256) {
      throw new FlightError('CANNOT_RESUME', 'upstream gave no validator and the object has no hash to check');
    }
    this.#deps.metrics.counters.upstreamRequests++;
    const res = await this.#send(target);
    try {
      let skip = 0;
      let total: number | undefined;
      if (res.statusCode === 206 && this.#received > 0) {
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers['content-range'] ?? '');
        if (!m || Number(m[1]) !== this.#received) throw new Error(`bad Content-Range ${res.headers['content-range']}`);
        total = Number(m[3]);
      } else if (res.statusCode === 200) {
        // A whole body on a resume is either a different validator scheme (fine when the hash will
        // tell) or a changed object: without a hash to check, splicing two versions is not an option.
        if (this.#received > 0 && !this.expectedSha256) {
          throw new FlightError('CHANGED_UPSTREAM', 'object changed upstream mid-fill and has no hash to check');
        }
        skip = this.#received;
        const length = res.headers['content-length'];
        total = length === undefined ? undefined : Number(length);
      } else {
        throw new Error(`upstream answered ${res.statusCode}`);
      }
      if (total !== undefined && (!Number.isSafeInteger(total) || total < 0)) throw new Error('bad length');
      if (this.size !== undefined && total !== undefined && total !== this.size) {
        throw new Error(`upstream size ${total} differs from ${this.size}`);
      }
      const etag = res.headers.etag;
      this.#validator = etag && !etag.startsWith('W/') ? etag : undefined;
      // A parent cache only tags what it has verified with its sha256, so URL-mode bytes get checked too.
      const parentHash = target.via === 'parent' ? /^"([0-9a-f]{64})"$/.exec(etag ?? '')?.[1] : undefined;
      if (parentHash && this.expectedSha256 === undefined && this.#received === 0) this.expectedSha256 = parentHash;
      if (this.state === 'connecting') await this.#begin(total, res.headers['content-type']);

      for await (const piece of batched(res, WRITE_BATCH)) {
        let data = piece;
        if (skip > 0) {
          const n = Math.min(skip, data.length);
          skip -= n;
          data = data.subarray(n);
          if (data.length === 0) continue;
        }
        if (this.size !== undefined && this.#received + data.length > this.size) throw new Error('upstream sent too much');
        await this.#accept(data);
        if (this.#cancelled) throw this.#cancelled;
      }
      if (skip > 0 || (this.size !== undefined && this.#received !== this.size)) {
        throw new Error(`upstream ended at ${this.#received} of ${this.size ?? '?'}`);
      }
    } finally {
      res.destroy();
    }
  }

  async #begin(total: number | undefined, contentType: string | undefined): Promise<void> {
    this.size = total;
    if (contentType && /^[\w.+-]+\/[\w.+-]+/.test(contentType)) this.contentType = contentType;
    this.#reservation = await this.#deps.space.reserve(total ?? 0);
    if (this.#reservation) {
      try {
        this.#fh = await open(this.#tempPath, 'w+');
      } catch (err) {
        this.#deps.log.warn('cannot create temp file', { key: this.key, error: (err as Error).message });
      }
    }
    if (!this.#fh) this.#enterPassThrough('no room to store');
    this.state = 'filling';
    // With an unknown size the bytes are served once complete (no range can be answered before).
    if (total !== undefined) this.#sizeKnown();
    this.#notify();
  }

  async #accept(data: Buffer): Promise<void> {
    this.#hash.update(data);
    this.#deps.metrics.counters.upstreamBytes += data.length;
    let rest = data;
    while (!this.passThrough && rest.length > 0) {
      try {
        const { bytesWritten } = await this.#fh!.write(rest, 0, rest.length, this.#written);
        this.#written += bytesWritten;
        this.#received += bytesWritten;
        rest = rest.subarray(bytesWritten);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOSPC' && code !== 'EDQUOT') throw err;
        this.#enterPassThrough(code);
      }
    }
    if (rest.length > 0) {
      this.#chunks.push({ offset: this.#received, data: rest });
      this.#received += rest.length;
    }
    this.#notify();
    if (this.passThrough) await this.#throttle();
  }

  #enterPassThrough(reason: string): void {
    this.passThrough = true;
    this.#fileEnd = this.#written;
    this.#deps.metrics.counters.passThroughFills++;
    this.#deps.log.warn('fill passes through unstored', { key: this.key, reason, offset: this.#written });
    // Unlinking gives the space back once the readers still behind fileEnd close the handle.
    void unlink(this.#tempPath).catch(() => undefined);
  }

  async #throttle(): Promise<void> {
    for (;;) {
      if (this.#tickets.size === 0) throw new FlightError('NO_READERS', 'pass-through fill has no readers left');
      if (this.size === undefined) throw new FlightError('NO_ROOM', 'no room to store an object of unknown size');
      let min = this.#received;
      for (const t of this.#tickets) min = Math.min(min, t.pos);
      while (this.#chunks.length > 0 && this.#chunks[0]!.offset + this.#chunks[0]!.data.length <= min) this.#chunks.shift();
      if (this.#received - min <= PASS_THROUGH_BUFFER) return;
      await this.#changed;
      if (this.#cancelled) throw this.#cancelled;
    }
  }

  async #finish(): Promise<void> {
    if (this.size === undefined) this.size = this.#received;
    const digest = this.#hash.digest('hex');
    if (this.expectedSha256 && digest !== this.expectedSha256) {
      this.#deps.metrics.counters.hashMismatches++;
      throw new FlightError('HASH_MISMATCH', `sha256 ${digest} does not match ${this.expectedSha256}`);
    }
    this.sha256 = digest;
    // The bytes are good: clients may have the last one now, while our copy is still being made durable.
    this.#verified = true;
    this.#notify();
    if (this.passThrough || !this.#fh) return;
    try {
      await this.#fh.sync();
      await this.#deps.store.publish(this.#tempPath, digest, this.size, this.contentType);
      this.stored = true;
      this.#spec.onPublished?.(digest);
    } catch (err) {
      // Bytes are verified: the clients may have them even if they could not be kept.
      this.#deps.log.warn('publish failed, object served unstored', { key: this.key, error: (err as Error).message });
      this.passThrough = true;
      this.#fileEnd = this.#written;
      await this.#dropTemp();
    }
  }

  async #dropTemp(): Promise<void> {
    await unlink(this.#tempPath).catch(() => undefined);
  }

  async #closeIfIdle(): Promise<void> {
    if (this.#tickets.size > 0 || (this.state !== 'complete' && this.state !== 'failed')) return;
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close().catch(() => undefined);
  }

  /** Joins the flight; until released, pass-through bytes from the ticket's position on are kept. */
  join(): FlightTicket {
    const ticket: FlightTicket = { pos: 0, released: false };
    this.#tickets.add(ticket);
    return ticket;
  }

  release(ticket: FlightTicket): void {
    if (ticket.released) return;
    ticket.released = true;
    this.#tickets.delete(ticket);
    this.#notify();
    void this.#closeIfIdle();
  }

  /**
   * Bytes start..end (inclusive) as they arrive. The last byte of the object is held back until the
   * hash has been checked, so a client never completes a download of unverified content: on a
   * mismatch or a dead upstream the iterator throws and the caller cuts the connection.
   */
  async *read(ticket: FlightTicket, start: number, end: number): AsyncGenerator<Buffer> {
    ticket.pos = start;
    while (ticket.pos <= end) {
      if (this.state === 'failed') throw this.error ?? new Error('fill failed');
      const complete = this.state === 'complete';
      const size = this.size;
      const verifiedLimit = this.#verified || size === undefined ? this.#received : Math.min(this.#received, size - 1);
      const fileLimit = this.passThrough ? Math.min(this.#fileEnd, verifiedLimit) : verifiedLimit;
      if (ticket.pos < fileLimit && this.#fh) {
        const length = Math.min(READ_CHUNK, fileLimit - ticket.pos, end + 1 - ticket.pos);
        const buffer = Buffer.allocUnsafe(length);
        const { bytesRead } = await this.#fh.read(buffer, 0, length, ticket.pos);
        if (bytesRead === 0) throw new Error('temp file shorter than written');
        ticket.pos += bytesRead;
        yield buffer.subarray(0, bytesRead);
        continue;
      }
      if (this.passThrough && ticket.pos >= this.#fileEnd && ticket.pos < verifiedLimit) {
        const pos = ticket.pos;
        const chunk = this.#chunks.find((c) => c.offset <= pos && pos < c.offset + c.data.length);
        if (!chunk) throw new Error('pass-through bytes no longer buffered');
        const from = pos - chunk.offset;
        const slice = chunk.data.subarray(from, Math.min(chunk.data.length, from + end + 1 - pos));
        ticket.pos += slice.length;
        this.#notify();
        yield slice;
        continue;
      }
      if (complete) throw new Error('read past the end of a complete object');
      await this.#changed;
    }
  }
}

/**
 * Everything that arrived while the consumer was busy, as one buffer: a fast upstream then costs one
 * write and one follower wake-up per batch instead of per socket read, a slow one adds no latency.
 */
async function* batched(source: IncomingMessage, maxBytes: number): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let queued = 0;
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const signal = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (chunk: Buffer) => {
    queue.push(chunk);
    queued += chunk.length;
    if (queued >= maxBytes) source.pause();
    signal();
  };
  const onEnd = () => {
    ended = true;
    signal();
  };
  const onError = (err: Error) => {
    failure ??= err;
    signal();
  };
  const onClose = () => {
    if (!ended) failure ??= new Error('upstream connection closed mid-body');
    signal();
  };
  source.on('data', onData);
  source.once('end', onEnd);
  source.once('error', onError);
  source.once('close', onClose);
  try {
    for (;;) {
      if (queued > 0) {
        const batch = queue.length === 1 ? queue[0]! : Buffer.concat(queue, queued);
        queue.length = 0;
        queued = 0;
        source.resume();
        yield batch;
        continue;
      }
      if (failure) throw failure;
      if (ended) return;
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    source.off('data', onData);
    source.off('end', onEnd);
    source.off('error', onError);
    source.off('close', onClose);
  }
}
