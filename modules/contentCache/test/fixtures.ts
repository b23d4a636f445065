// Test doubles that speak real HTTP over loopback: a scriptable origin and a client that notices cut connections.
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { createContentCache } from '../src/cacheServer.ts';
import type { ContentCache, ContentCacheOptions } from '../src/cacheServer.ts';

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function blob(bytes: number): Buffer {
  return randomBytes(bytes);
}

export async function tempDir(prefix = 'cc-'): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export interface OriginObject {
  body: Buffer;
  etag?: string;
  /** Send without Content-Length (chunked). */
  noLength?: boolean;
  /** Destroy the socket after sending this many body bytes of any response. */
  dieAfter?: number;
  /** Replace the body with other bytes of the same length. */
  corrupt?: boolean;
  /** Pause after this many body bytes until release() is called. */
  holdAt?: number;
  /** What later requests for the same path get (the object changed, or the mirror recovered). */
  next?: OriginObject;
}

export interface SeenRequest {
  path: string;
  headers: IncomingHttpHeaders;
}

/** An origin (or mirror) with per-path behaviour; supports single ranges and If-Range like a CDN. */
export class TestOrigin {
  readonly objects = new Map<string, OriginObject>();
  readonly requests: SeenRequest[] = [];
  readonly #server: http.Server;
  #release: () => void = () => {};
  #released: Promise<void>;
  /** Resolves when a response reaches its hold point. */
  holding: Promise<void>;
  #holdReached: () => void = () => {};

  constructor() {
    this.#released = new Promise((r) => (this.#release = r));
    this.holding = new Promise((r) => (this.#holdReached = r));
    this.#server = http.createServer((req, res) => void this.#handle(req, res));
  }

  async listen(host = '127.0.0.1'): Promise<this> {
    this.#server.listen(0, host);
    await once(this.#server, 'listening');
    return this;
  }

  get url(): string {
    const a = this.#server.address() as AddressInfo;
    return `http://${a.address}:${a.port}`;
  }

  get host(): string {
    const a = this.#server.address() as AddressInfo;
    return `${a.address}:${a.port}`;
  }

  release(): void {
    this.#release();
  }

  requestsFor(p: string): SeenRequest[] {
    return this.requests.filter((r) => r.path.split('?')[0] === p);
  }

  async close(): Promise<void> {
    this.#release();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const p = (req.url ?? '/').split('?')[0]!;
    this.requests.push({ path: req.url ?? '/', headers: req.headers });
    const first = this.objects.get(p);
    const obj = first?.next && this.requestsFor(p).length > 1 ? first.next : first;
    if (!obj) {
      res.statusCode = 404;
      res.end('not here');
      return;
    }
    let body = obj.corrupt ? Buffer.from(obj.body.map((b) => b ^ 0xff)) : obj.body;
    const etag = obj.etag ?? `"${sha256(obj.body).slice(0, 16)}"`;
    res.setHeader('etag', etag);
    res.setHeader('content-type', 'application/x-test');
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const ifRange = req.headers['if-range'];
    let full = true;
    if (range && (ifRange === undefined || ifRange === etag)) {
      const start = Number(range[1]);
      res.statusCode = 206;
      res.setHeader('content-range', `bytes ${start}-${body.length - 1}/${body.length}`);
      body = body.subarray(start);
      full = false;
    }
    if (!obj.noLength) res.setHeader('content-length', body.length);
    let sent = 0;
    const step = 64 * 1024;
    while (sent < body.length) {
      if (obj.holdAt !== undefined && sent >= obj.holdAt && full) {
        this.#holdReached();
        await this.#released;
      }
      if (obj.dieAfter !== undefined && sent >= obj.dieAfter) {
        res.socket?.destroy();
        return;
      }
      let n = Math.min(step, body.length - sent);
      if (obj.holdAt !== undefined && sent < obj.holdAt && full) n = Math.min(n, obj.holdAt - sent);
      if (obj.dieAfter !== undefined) n = Math.min(n, obj.dieAfter - sent);
      const ok = res.write(body.subarray(sent, sent + n));
      sent += n;
      if (!ok) await drainedOrClosed(res);
      if (res.destroyed) return;
    }
    res.end();
  }
}

/** Waits for 'drain' or 'close', removing both listeners after (a race of events.once leaves the loser's behind). */
function drainedOrClosed(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

export interface FetchResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** The connection ended before the response was complete. */
  cut: boolean;
}

/** Node's http client; never rejects after headers, so a test can assert on a cut connection. */
export function fetchRaw(url: string, options: { method?: string; headers?: Record<string, string | string[]>; agent?: http.Agent } = {}): Promise<FetchResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: options.agent ?? false });
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      let cut = false;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('aborted', () => (cut = true));
      res.once('error', () => (cut = true));
      res.once('close', () => {
        cut ||= !res.complete;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), cut });
      });
    });
    req.end();
  });
}

export function curl(args: string[]): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', ...args], { encoding: 'buffer', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: unknown }).code as number) ?? 1 : 0;
      resolve({ code: typeof code === 'number' ? code : 1, stdout, stderr: stderr.toString() });
    });
  });
}

/** Parses a multipart/byteranges body into its parts. */
export function multipartParts(body: Buffer, contentType: string): Array<{ range: string; data: Buffer }> {
  const boundary = /boundary=(\S+)/.exec(contentType)?.[1];
  if (!boundary) throw new Error('no boundary');
  const parts: Array<{ range: string; data: Buffer }> = [];
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  let pos = body.indexOf(delimiter);
  while (pos >= 0) {
    const after = pos + delimiter.length;
    if (body.subarray(after, after + 2).toString() === '--') break;
    const headEnd = body.indexOf('\r\n\r\n', after);
    const head = body.subarray(after, headEnd).toString();
    const range = /Content-Range: bytes (\S+)/i.exec(head)?.[1] ?? '';
    const [a, b] = range.split('/')[0]!.split('-').map(Number);
    const dataStart = headEnd + 4;
    const data = body.subarray(dataStart, dataStart + (b! - a! + 1));
    parts.push({ range, data });
    pos = body.indexOf(delimiter, dataStart + data.length);
  }
  return parts;
}

/** Owns everything a test starts, so afterEach can close all of it. */
export class Harness {
  readonly #closers: Array<() => Promise<void>> = [];

  async origin(host = '127.0.0.1'): Promise<TestOrigin> {
    const o = await new TestOrigin().listen(host);
    this.#closers.push(() => o.close());
    return o;
  }

  async dir(): Promise<string> {
    const t = await tempDir();
    this.#closers.push(() => t.remove());
    return t.dir;
  }

  async cache(options: Partial<ContentCacheOptions> = {}): Promise<ContentCache> {
    const stateDir = options.stateDir ?? (await this.dir());
    const cache = createContentCache({ bindAddress: '127.0.0.1', port: 0, ...options, stateDir });
    await cache.listen();
    this.#closers.push(() => cache.close());
    return cache;
  }

  /** Registers extra teardown (unmounts, child processes). */
  onCleanup(fn: () => Promise<void>): void {
    this.#closers.push(fn);
  }

  async cleanup(): Promise<void> {
    // Reverse order: caches close before the directories under them are removed.
    while (this.#closers.length > 0) await this.#closers.pop()!().catch(() => undefined);
  }
}

/** Polls a condition every few milliseconds; gives up (throws) after `limit` polls. */
export async function until(condition: () => boolean, what: string, limit = 2000): Promise<void> {
  for (let i = 0; i < limit; i++) {
    if (condition()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`gave up waiting for ${what}`);
}

/** Waits until no fill is in flight: a client can finish before its object is fsynced and published. */
export async function settled(...caches: Array<{ summary(): { fillsInFlight: number } }>): Promise<void> {
  await until(() => caches.every((c) => c.summary().fillsInFlight === 0), 'fills to settle');
}
