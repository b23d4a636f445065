import { performance } from 'node:perf_hooks';
import { ConsoleFrameDecoder, encodeConsoleFrame } from './smpFraming.ts';
import { SMP_HEADER_SIZE, decodeSmpHeader, encodeSmpHeader } from './smpHeader.ts';
import type { SmpHeader } from './smpHeader.ts';
import { CborError, decodeCbor, encodeCbor } from './smpCbor.ts';
import type { CborMap } from './smpCbor.ts';
import { LinkDownError } from './link.ts';
import type { ByteLink } from './link.ts';

export interface SmpClientOptions {
  /** 2 (default) sends header version 1 and understands err{group,rc}; 1 is the legacy protocol. */
  smpVersion?: 1 | 2;
  /** Upper bound for one attempt; the adaptive timeout never exceeds it. */
  timeoutMs?: number;
  /** Floor of the adaptive timeout, which otherwise follows the measured round trip (as TCP's RTO does). */
  minTimeoutMs?: number;
  retries?: number;
  /** How long an attempt waits for a link that is down (cable pulled, device re-enumerating). */
  linkWaitMs?: number;
  /** Lines on the UART that are not SMP: the MCU's own log output. */
  onNoise?: (line: Uint8Array) => void;
}

export interface SmpRequest {
  op: 'read' | 'write';
  group: number;
  command: number;
  body?: CborMap;
  /** Fixed timeout for this request (no adaptation), e.g. a first upload chunk that triggers a flash erase. */
  timeoutMs?: number;
  retries?: number;
}

export interface SmpResponse {
  header: SmpHeader;
  body: CborMap;
  attempts: number;
}

export class SmpTimeoutError extends Error {
  override name = 'SmpTimeoutError';
  readonly group: number;
  readonly command: number;
  constructor(group: number, command: number, attempts: number) {
    super(`no SMP reply for group ${group} command ${command} after ${attempts} attempt(s)`);
    this.group = group;
    this.command = command;
  }
}

/** The device answered with an error, in either the SMP v1 form {rc} or the v2 form {err:{group,rc}}. */
export class SmpDeviceError extends Error {
  override name = 'SmpDeviceError';
  readonly group: number;
  readonly rc: number;
  readonly command: number;
  constructor(group: number, command: number, rc: number) {
    super(`device returned rc ${rc} (${MGMT_ERR_NAMES[rc] ?? 'group specific'}) for group ${group} command ${command}`);
    this.group = group;
    this.command = command;
    this.rc = rc;
  }
}

/** MGMT_ERR_* from Zephyr's mgmt.h (the v1 rc values, also the group-0 v2 values). */
export const MGMT_ERR_NAMES: Record<number, string> = {
  1: 'EUNKNOWN',
  2: 'ENOMEM',
  3: 'EINVAL',
  4: 'ETIMEOUT',
  5: 'ENOENT',
  6: 'EBADSTATE',
  7: 'EMSGSIZE',
  8: 'ENOTSUP',
  9: 'ECORRUPT',
  10: 'EBUSY',
  11: 'EACCESSDENIED',
};

export interface SmpClientStats {
  requests: number;
  attempts: number;
  timeouts: number;
  badFrames: number;
  noiseLines: number;
  strayReplies: number;
}

interface Pending {
  group: number;
  command: number;
  op: number;
  resolve: (reply: { header: SmpHeader; body: CborMap }) => void;
}

/**
 * SMP requests over a byte link. Replies are matched by sequence number, group and command; every retry
 * gets a fresh sequence number but a late reply to an earlier attempt of the same request is still accepted,
 * so a timeout never leaves the client and the device disagreeing about which reply belongs to what.
 */
export class SmpClient {
  readonly #link: ByteLink;
  readonly #decoder = new ConsoleFrameDecoder();
  readonly #pending = new Map<number, Pending>();
  readonly #options: Required<Omit<SmpClientOptions, 'onNoise'>> & Pick<SmpClientOptions, 'onNoise'>;
  readonly #unsubscribe: () => void;
  #seq = Math.floor(Math.random() * 256);
  #srtt: number | undefined;
  #rttvar = 0;
  /** Doubles with every timeout and drops back with the next reply: a slow device is not hammered. */
  #backoff = 1;
  readonly stats: SmpClientStats = { requests: 0, attempts: 0, timeouts: 0, badFrames: 0, noiseLines: 0, strayReplies: 0 };

  constructor(link: ByteLink, options: SmpClientOptions = {}) {
    this.#link = link;
    this.#options = { smpVersion: 2, timeoutMs: 2000, minTimeoutMs: 100, retries: 3, linkWaitMs: 10_000, ...options };
    this.#unsubscribe = link.onData((bytes) => this.#onBytes(bytes));
  }

  get link(): ByteLink {
    return this.#link;
  }

  /** The timeout the next adaptive attempt would use. */
  get currentTimeoutMs(): number {
    const { minTimeoutMs, timeoutMs } = this.#options;
    if (this.#srtt === undefined) return timeoutMs;
    return Math.min(timeoutMs, Math.max(minTimeoutMs, this.#srtt + 4 * this.#rttvar) * this.#backoff);
  }

  close(): void {
    this.#unsubscribe();
    this.#pending.clear();
  }

  async request(req: SmpRequest): Promise<SmpResponse> {
    const reply = await this.requestRaw(req);
    const rc = errorCode(reply.body);
    if (rc !== undefined) throw new SmpDeviceError(rc.group ?? req.group, req.command, rc.rc);
    return reply;
  }

  /** Like request() but hands back error replies instead of throwing. */
  async requestRaw(req: SmpRequest): Promise<SmpResponse> {
    this.stats.requests++;
    const op = req.op === 'read' ? 0 : 2;
    const cbor = encodeCbor(req.body ?? {});
    const retries = req.retries ?? this.#options.retries;
    const seqs: number[] = [];
    // A box rather than a let: the reply arrives in a callback, which control-flow narrowing cannot see.
    const box: { reply?: { header: SmpHeader; body: CborMap } } = {};
    let wake: (() => void) | undefined;
    const entry: Pending = {
      group: req.group,
      command: req.command,
      op: op + 1,
      resolve: (reply) => {
        box.reply ??= reply;
        wake?.();
      },
    };
    try {
      for (let attempt = 1; attempt <= retries + 1; attempt++) {
        this.stats.attempts++;
        try {
          await this.#link.whenUp(this.#options.linkWaitMs);
        } catch (error) {
          if (this.#link.state === 'closed' || attempt > retries) throw error;
          continue;
        }
        const seq = this.#nextSeq();
        seqs.push(seq);
        this.#pending.set(seq, entry);
        const header = encodeSmpHeader({
          version: this.#options.smpVersion === 2 ? 1 : 0,
          op,
          flags: 0,
          length: cbor.length,
          group: req.group,
          seq,
          command: req.command,
        });
        const packet = new Uint8Array(SMP_HEADER_SIZE + cbor.length);
        packet.set(header);
        packet.set(cbor, SMP_HEADER_SIZE);
        try {
          await this.#link.write(encodeConsoleFrame(packet));
        } catch (error) {
          if (!(error instanceof LinkDownError)) throw error;
          // The line went away under us; the next attempt waits for it to come back.
          continue;
        }
        if (box.reply) return { ...box.reply, attempts: attempt };
        const timeoutMs = req.timeoutMs ?? this.currentTimeoutMs;
        const sentAt = performance.now();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, timeoutMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
        const reply = box.reply as { header: SmpHeader; body: CborMap } | undefined;
        if (reply) {
          // Karn's rule: only unambiguous, unretried round trips train the timeout.
          if (attempt === 1 && req.timeoutMs === undefined) this.#sample(performance.now() - sentAt);
          return { ...reply, attempts: attempt };
        }
        this.stats.timeouts++;
        this.#backoff = Math.min(this.#backoff * 2, 32);
      }
      throw new SmpTimeoutError(req.group, req.command, retries + 1);
    } finally {
      for (const seq of seqs) if (this.#pending.get(seq) === entry) this.#pending.delete(seq);
    }
  }

  #sample(rtt: number): void {
    if (this.#srtt === undefined) {
      this.#srtt = rtt;
      this.#rttvar = rtt / 2;
    } else {
      this.#rttvar = 0.75 * this.#rttvar + 0.25 * Math.abs(this.#srtt - rtt);
      this.#srtt = 0.875 * this.#srtt + 0.125 * rtt;
    }
  }

  #nextSeq(): number {
    for (let i = 0; i < 256; i++) {
      this.#seq = (this.#seq + 1) & 0xff;
      if (!this.#pending.has(this.#seq)) return this.#seq;
    }
    throw new Error('all 256 SMP sequence numbers are in flight');
  }

  #onBytes(bytes: Uint8Array): void {
    for (const event of this.#decoder.push(bytes)) {
      if (event.kind === 'noise') {
        this.stats.noiseLines++;
        this.#options.onNoise?.(event.line);
      } else if (event.kind === 'bad-frame') {
        this.stats.badFrames++;
      } else {
        this.#onPacket(event.packet);
      }
    }
  }

  #onPacket(packet: Uint8Array): void {
    if (packet.length < SMP_HEADER_SIZE) {
      this.stats.badFrames++;
      return;
    }
    const header = decodeSmpHeader(packet);
    const pending = this.#pending.get(header.seq);
    if (!pending || pending.group !== header.group || pending.command !== header.command || pending.op !== header.op) {
      this.stats.strayReplies++;
      return;
    }
    if (header.length !== packet.length - SMP_HEADER_SIZE) {
      this.stats.badFrames++;
      return;
    }
    let body;
    try {
      body = decodeCbor(packet.subarray(SMP_HEADER_SIZE));
    } catch (error) {
      if (!(error instanceof CborError)) throw error;
      this.stats.badFrames++;
      return;
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body) || body instanceof Uint8Array) {
      this.stats.badFrames++;
      return;
    }
    this.#backoff = 1;
    pending.resolve({ header, body });
  }
}

/** The error carried by a reply, if any: {rc} (v1, 0 is success) or {err:{group,rc}} (v2). */
export function errorCode(body: CborMap): { group?: number; rc: number } | undefined {
  const err = body.err;
  if (err && typeof err === 'object' && !Array.isArray(err) && !(err instanceof Uint8Array)) {
    const rc = err.rc;
    const group = err.group;
    if (typeof rc === 'number' && rc !== 0) return { rc, ...(typeof group === 'number' ? { group } : {}) };
  }
  if (typeof body.rc === 'number' && body.rc !== 0) return { rc: body.rc };
  return undefined;
}
