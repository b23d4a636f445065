// The orchestrator's side door: prefetch and pin, import verified local files, unpin, list, stats.
import { createReadStream } from 'node:fs';
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ContentStore, StoredObject } from './contentStore.ts';
import { SHA256_HEX } from './contentStore.ts';
import type { CacheCounters } from './cacheMetrics.ts';
import type { Logger } from './log.ts';
import { reply, replyError } from './jsonReply.ts';

export interface PrefetchRequest {
  objects: Array<{ sha256: string; sources?: string[]; pin?: boolean }>;
  /** Answer only when every object is in (or failed); otherwise 202 at once and fetch in the background. */
  wait?: boolean;
}

export interface PrefetchOutcome {
  sha256: string;
  status: 'present' | 'fetched' | 'failed';
  error?: string;
}

export interface ImportRequest {
  files: Array<{ path: string; sha256: string }>;
  pin?: boolean;
}

export interface IngestOutcome {
  sha256: string;
  status: 'present' | 'imported' | 'mismatch' | 'error';
  size?: number;
  error?: string;
}

export interface CacheSummary {
  counters: CacheCounters;
  objects: number;
  storedBytes: number;
  pinnedObjects: number;
  reservedBytes: number;
  fillsInFlight: number;
}

export interface ListedObject extends StoredObject {
  sources: string[];
}

export interface AdminContext {
  store: ContentStore;
  summary(): CacheSummary;
  prefetch(sha256: string, sources: readonly string[], pin: boolean): Promise<PrefetchOutcome>;
  ingest(sha256: string, body: AsyncIterable<Buffer>, pin: boolean): Promise<IngestOutcome>;
  importRoots: readonly string[];
  log: Logger;
}

const MAX_JSON_BODY = 1 << 20;

class BadRequest extends Error {}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BODY) throw new BadRequest('body too large');
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw new BadRequest('body is not JSON');
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function hashOf(v: unknown): string {
  if (typeof v !== 'string' || !SHA256_HEX.test(v)) throw new BadRequest('sha256 must be 64 lower-case hex digits');
  return v;
}

function sourcesOf(v: unknown): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new BadRequest('sources must be an array');
  return v.map((s) => {
    if (typeof s !== 'string') throw new BadRequest('source must be a URL string');
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      throw new BadRequest(`bad source URL ${s}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BadRequest('sources must be http(s)');
    return url.href;
  });
}

/** A bundle path is read only if, with symlinks resolved, it lies inside one of the import roots. */
async function importablePath(candidate: string, roots: readonly string[]): Promise<string> {
  if (roots.length === 0) throw new BadRequest('import is disabled: no import roots configured');
  let real: string;
  try {
    real = await realpath(candidate);
  } catch {
    throw new BadRequest(`cannot read ${candidate}`);
  }
  for (const root of roots) {
    const realRoot = await realpath(root).catch(() => undefined);
    if (realRoot && (real === realRoot || real.startsWith(realRoot + path.sep))) return real;
  }
  throw new BadRequest(`${candidate} is outside the import roots`);
}

export async function handleAdmin(req: IncomingMessage, res: ServerResponse, pathname: string, ctx: AdminContext): Promise<void> {
  try {
    const method = req.method ?? 'GET';
    if (pathname === '/admin/stats' && method === 'GET') return reply(res, 200, ctx.summary());
    if (pathname === '/admin/objects' && method === 'GET') {
      const objects: ListedObject[] = ctx.store.list().map((o) => ({ ...o, sources: ctx.store.sources(o.sha256) }));
      return reply(res, 200, { objects, pinned: ctx.store.pinnedHashes() });
    }
    if (pathname === '/admin/prefetch' && method === 'POST') {
      const body = await readJson(req);
      if (!isRecord(body) || !Array.isArray(body.objects)) throw new BadRequest('expected { objects: [...] }');
      const items = body.objects.map((o: unknown) => {
        if (!isRecord(o)) throw new BadRequest('object entries must be objects');
        return { sha256: hashOf(o.sha256), sources: sourcesOf(o.sources), pin: o.pin !== false };
      });
      const running = Promise.all(items.map((i) => ctx.prefetch(i.sha256, i.sources, i.pin)));
      if (body.wait === true) {
        const results = await running;
        return reply(res, results.every((r) => r.status !== 'failed') ? 200 : 502, { results });
      }
      void running.then(
        (results) => {
          for (const r of results.filter((x) => x.status === 'failed')) ctx.log.warn('prefetch failed', { ...r });
        },
        (err: unknown) => ctx.log.error('background prefetch failed', { error: (err as Error).message }),
      );
      return reply(res, 202, { accepted: items.map((i) => i.sha256) });
    }
    if (pathname === '/admin/import' && method === 'POST') {
      const body = await readJson(req);
      if (!isRecord(body) || !Array.isArray(body.files)) throw new BadRequest('expected { files: [...] }');
      const pin = body.pin !== false;
      const files = body.files.map((f: unknown) => {
        if (!isRecord(f) || typeof f.path !== 'string') throw new BadRequest('file entries need path and sha256');
        return { path: f.path, sha256: hashOf(f.sha256) };
      });
      const results: IngestOutcome[] = [];
      for (const file of files) {
        const real = await importablePath(file.path, ctx.importRoots);
        results.push(await ctx.ingest(file.sha256, createReadStream(real, { highWaterMark: 1 << 20 }), pin));
      }
      return reply(res, results.every((r) => r.status === 'imported' || r.status === 'present') ? 200 : 422, { results });
    }
    const upload = /^\/admin\/objects\/([^/]+)$/.exec(pathname);
    if (upload && method === 'PUT') {
      const sha256 = hashOf(upload[1]);
      const pin = new URL(req.url ?? '/', 'http://x').searchParams.get('pin') !== '0';
      const outcome = await ctx.ingest(sha256, req as AsyncIterable<Buffer>, pin);
      const status = outcome.status === 'imported' ? 201 : outcome.status === 'present' ? 200 : outcome.status === 'mismatch' ? 422 : 500;
      return reply(res, status, outcome);
    }
    if (pathname === '/admin/unpin' && method === 'POST') {
      const body = await readJson(req);
      if (!isRecord(body) || !Array.isArray(body.sha256)) throw new BadRequest('expected { sha256: [...] }');
      const hashes = body.sha256.map(hashOf);
      return reply(res, 200, { unpinned: hashes.filter((h) => ctx.store.unpin(h)).length });
    }
    return replyError(res, 'NOT_FOUND', `no admin route ${method} ${pathname}`);
  } catch (err) {
    if (err instanceof BadRequest) return replyError(res, 'BAD_REQUEST', err.message);
    throw err;
  }
}
