// The content cache as one object: HTTP(S) listeners, routing, hits, misses and the admin surface.
import http from 'node:http';
import https from 'node:https';
import { createReadStream } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { ContentStore, SHA256_HEX } from './contentStore.ts';
import { SpaceKeeper } from './spaceKeeper.ts';
import { CacheMetrics } from './cacheMetrics.ts';
import { FillFlight } from './fillFlight.ts';
import { UpstreamChain, ORIGIN_HEADER, VIA_HEADER, MAX_HOPS, requestedOrigins, viaList } from './upstreamChain.ts';
import { parseDeliveryRequest, originAllowList } from './deliveryUrl.ts';
import { sendObject } from './objectResponse.ts';
import { noneMatchHits } from './byteRanges.ts';
import type { ObjectView } from './objectResponse.ts';
import { bearerToken, sameSecret, verifyChildToken } from './accessTokens.ts';
import { handleAdmin } from './adminApi.ts';
import { ingestObject } from './objectImport.ts';
import { reply, replyError } from './jsonReply.ts';
import type { CacheSummary, PrefetchOutcome, IngestOutcome } from './adminApi.ts';
import { silentLogger } from './log.ts';
import type { Logger } from './log.ts';

export interface ContentCacheOptions {
  /** Volume holding objects/, tmp/ and index.sqlite. */
  stateDir: string;
  /** Parent caches (base URLs), tried in order before any origin. */
  parents?: readonly string[];
  /** May this layer fetch from origins itself? Default: only when it has no parent. */
  directOrigins?: boolean;
  /** Hosts allowed in URL mode (cacheHostOrigin): "host", "host:port", "https://host". */
  originHosts?: readonly string[];
  /**
   * When set, origin URLs that requests name for /sha256/ must be on these hosts. Bytes are hash-checked
   * either way; this stops children from making the gateway send requests to arbitrary hosts.
   */
  contentOriginHosts?: readonly string[];
  quotaBytes?: number;
  highWatermark?: number;
  lowWatermark?: number;
  minFreeBytes?: number;
  /** When set, content and metrics requests need `Bearer deriveChildToken(secret, deviceId)`. */
  childTokenSecret?: string | undefined;
  /**
   * Delivery Optimization clients cannot send bearer tokens: with this set, URL-mode requests (still
   * limited to originHosts) are served without one even when childTokenSecret is set.
   */
  deliveryWithoutToken?: boolean;
  /** When set, /admin needs `Bearer <adminToken>`; without it the admin API is open (development). */
  adminToken?: string | undefined;
  /** Token this cache presents to its parent. */
  upstreamToken?: string | undefined;
  /** Extra CA certificates for HTTPS upstreams (e.g. the IoT Edge trust bundle). */
  upstreamCa?: string | Buffer | undefined;
  bindAddress?: string;
  port?: number;
  /** Also serve TLS on tls.port (0 = any free port). */
  tls?: { key: string | Buffer; cert: string | Buffer; port?: number } | undefined;
  /** Directories whose files /admin/import may read (the USB bundle mount). */
  importRoots?: readonly string[];
  upstreamIdleTimeoutMs?: number;
  maxRanges?: number;
  maxHeaderSize?: number;
  logger?: Logger;
}

export interface ContentCache {
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
  address(): AddressInfo | undefined;
  tlsAddress(): AddressInfo | undefined;
  /** Base URL of the plain HTTP listener, e.g. http://127.0.0.1:41234 */
  readonly url: string;
  readonly metrics: CacheMetrics;
  readonly store: ContentStore;
  summary(): CacheSummary;
  prefetch(sha256: string, sources: readonly string[], pin: boolean): Promise<PrefetchOutcome>;
}

const MAX_ORIGINS = 16;

export function createContentCache(options: ContentCacheOptions): ContentCache {
  const log = options.logger ?? silentLogger;
  const instanceId = randomBytes(6).toString('hex');
  const store = new ContentStore(options.stateDir);
  const metrics = new CacheMetrics();
  const flights = new Map<string, FillFlight>();
  const reading = new Map<string, number>();
  const verifying = new Map<string, Promise<boolean>>();
  const space = new SpaceKeeper(
    store,
    {
      quotaBytes: options.quotaBytes ?? 10 * 1024 ** 3,
      highWatermark: options.highWatermark ?? 0.9,
      lowWatermark: options.lowWatermark ?? 0.75,
      minFreeBytes: options.minFreeBytes ?? 64 * 1024 ** 2,
    },
    (sha) => (reading.get(sha) ?? 0) > 0 || verifying.has(sha),
    log,
    () => metrics.counters.evictions++,
  );
  const parents = options.parents ?? [];
  const chain = new UpstreamChain({
    parents,
    directOrigins: options.directOrigins ?? parents.length === 0,
    token: options.upstreamToken,
  });
  const allowedOrigins = originAllowList(options.originHosts ?? []);
  const contentOrigins = options.contentOriginHosts && new Set(originAllowList(options.contentOriginHosts).keys());
  const maxRanges = options.maxRanges ?? 256;
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 64, ca: options.upstreamCa });
  const flightDeps = {
    store,
    space,
    metrics,
    log,
    idleTimeoutMs: options.upstreamIdleTimeoutMs ?? 30_000,
    httpAgent,
    httpsAgent,
  };
  if (store.recoveredFromCrash) log.warn('previous run ended uncleanly: objects will be re-verified before use');

  const serverOptions = { maxHeaderSize: options.maxHeaderSize ?? 16 * 1024 };
  const server = http.createServer(serverOptions, (req, res) => void route(req, res));
  const tlsServer = options.tls
    ? https.createServer({ ...serverOptions, key: options.tls.key, cert: options.tls.cert }, (req, res) => void route(req, res))
    : undefined;
  const sockets = new Set<Socket>();
  for (const s of [server, tlsServer]) {
    s?.on('connection', (socket: Socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    });
  }

  function startFlight(key: string, spec: ConstructorParameters<typeof FillFlight>[0]): FillFlight {
    const flight = new FillFlight(spec, flightDeps);
    flights.set(key, flight);
    void flight.finished
      .catch(() => undefined)
      .then(async () => {
        if (flights.get(key) === flight) flights.delete(key);
        if (flight.stored) await space.afterPublish();
      })
      .catch((err: unknown) => log.error('eviction after publish failed', { key, error: (err as Error).message }));
    return flight;
  }

  /** A flight that a new request may still join: not finished and still storing its bytes. */
  function joinable(key: string): FillFlight | undefined {
    const f = flights.get(key);
    return f && !f.passThrough && (f.state === 'connecting' || f.state === 'filling') ? f : undefined;
  }

  function contentFlight(sha256: string, origins: readonly string[], via: readonly string[]): FillFlight | undefined {
    const key = `sha256:${sha256}`;
    const existing = joinable(key);
    if (existing) return existing;
    const all = [...new Set([...origins, ...store.sources(sha256)])].slice(0, MAX_ORIGINS);
    const targets = chain.forContent(sha256, all, [...via, instanceId]);
    if (targets.length === 0) return undefined;
    return startFlight(key, { key, expectedSha256: sha256, targets });
  }

  // Objects from before an unclean shutdown are hashed once, by one caller, before anyone gets them.
  async function ensureVerified(sha256: string): Promise<boolean> {
    const obj = store.lookup(sha256);
    if (!obj) return false;
    if (obj.verified) return true;
    let pending = verifying.get(sha256);
    if (!pending) {
      pending = (async () => {
        const hash = createHash('sha256');
        for await (const chunk of createReadStream(store.objectPath(sha256), { highWaterMark: 1 << 20 })) {
          hash.update(chunk as Buffer);
        }
        const ok = hash.digest('hex') === sha256;
        if (ok) store.markVerified(sha256);
        else {
          metrics.counters.hashMismatches++;
          log.error('stored object failed re-verification, removed', { sha256 });
          await store.remove(sha256);
        }
        return ok;
      })()
        .catch(async (err: unknown) => {
          log.error('re-verification failed', { sha256, error: (err as Error).message });
          await store.remove(sha256);
          return false;
        })
        .finally(() => verifying.delete(sha256));
      verifying.set(sha256, pending);
    }
    return pending;
  }

  function rememberSources(sha256: string, origins: readonly string[]): void {
    try {
      store.addSources(sha256, origins.slice(0, MAX_ORIGINS));
    } catch (err) {
      log.warn('could not remember sources', { sha256, error: (err as Error).message });
    }
  }

  function safeTouch(sha256: string): void {
    try {
      store.touch(sha256);
    } catch (err) {
      // A full disk can refuse the index write; serving the bytes matters more than LRU order.
      log.warn('index update failed', { sha256, error: (err as Error).message });
    }
  }

  async function serveStored(req: IncomingMessage, res: ServerResponse, sha256: string, contentType?: string): Promise<boolean> {
    const obj = store.lookup(sha256);
    if (!obj) return false;
    // Counted as busy from here on, so eviction cannot pull the file away between lookup and read.
    reading.set(sha256, (reading.get(sha256) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (reading.get(sha256) ?? 1) - 1;
      if (n > 0) reading.set(sha256, n);
      else reading.delete(sha256);
    };
    if (!(await ensureVerified(sha256))) {
      release();
      return false;
    }
    res.once('close', release);
    safeTouch(sha256);
    metrics.counters.hitRequests++;
    const file = store.objectPath(sha256);
    const view: ObjectView = {
      size: obj.size,
      etag: `"${sha256}"`,
      contentType: contentType ?? obj.contentType,
      cacheStatus: 'HIT',
      open: (start, end): Readable => createReadStream(file, { start, end, highWaterMark: 1 << 20 }),
    };
    await sendObject(req, res, view, {
      maxRanges,
      count: (n) => {
        metrics.counters.hitBytes += n;
        metrics.counters.egressBytes += n;
      },
    });
    return true;
  }

  async function serveFlight(req: IncomingMessage, res: ServerResponse, flight: FillFlight): Promise<void> {
    const ticket = flight.join();
    res.once('close', () => flight.release(ticket));
    metrics.counters.missRequests++;
    try {
      await flight.ready();
    } catch (err) {
      if (!res.headersSent) replyError(res, 'UPSTREAM_FAILED', (err as Error).message);
      return;
    }
    const view: ObjectView = {
      size: flight.size!,
      etag: flight.etag,
      contentType: flight.contentType,
      cacheStatus: 'MISS',
      open: (start, end) => flight.read(ticket, start, end),
    };
    await sendObject(req, res, view, {
      maxRanges,
      count: (n) => {
        metrics.counters.missBytes += n;
        metrics.counters.egressBytes += n;
      },
    });
  }

  async function serveContent(req: IncomingMessage, res: ServerResponse, sha256: string, query: URLSearchParams, via: string[]): Promise<void> {
    // The ETag of /sha256/<h> can only ever be "<h>": a client that has it needs nothing, cached or not.
    if (noneMatchHits(req.headers['if-none-match'], `"${sha256}"`)) {
      res.statusCode = 304;
      res.setHeader('etag', `"${sha256}"`);
      res.end();
      return;
    }
    const origins = requestedOrigins(req.headers[ORIGIN_HEADER], query);
    if (!origins) return replyError(res, 'BAD_ORIGIN', 'origin URLs must be absolute http(s) URLs');
    const refused = contentOrigins && origins.find((o) => !contentOrigins.has(new URL(o).host.toLowerCase()));
    if (refused) return replyError(res, 'ORIGIN_NOT_ALLOWED', `origin ${new URL(refused).host} is not configured`);
    if (await serveStored(req, res, sha256)) return;
    if (origins.length > 0) rememberSources(sha256, origins);
    const flight = contentFlight(sha256, origins, via);
    if (!flight) return replyError(res, 'NO_SOURCE', 'object not cached and no origin known');
    await serveFlight(req, res, flight);
  }

  async function serveDelivery(req: IncomingMessage, res: ServerResponse, rawUrl: string, via: string[]): Promise<void> {
    const parsed = parseDeliveryRequest(rawUrl, allowedOrigins);
    if (!parsed.ok) return replyError(res, parsed.error, parsed.reason);
    const { request } = parsed;
    const bound = store.lookupUrl(request.cacheKey);
    if (bound && (await serveStored(req, res, bound.sha256, bound.contentType))) return;
    const key = `url:${request.cacheKey}`;
    let flight = joinable(key);
    if (!flight) {
      const targets = chain.forDelivery(request, [...via, instanceId]);
      if (targets.length === 0) return replyError(res, 'NO_UPSTREAM', 'no parent and no direct origin access');
      flight = startFlight(key, { key, targets, onPublished: (sha) => store.bindUrl(request.cacheKey, sha) });
    }
    await serveFlight(req, res, flight);
  }

  function authorisedChild(req: IncomingMessage): boolean {
    if (!options.childTokenSecret) return true;
    const token = bearerToken(req.headers.authorization);
    if (!token) return false;
    if (options.adminToken && sameSecret(token, options.adminToken)) return true;
    return verifyChildToken(options.childTokenSecret, token) !== undefined;
  }

  function authorisedAdmin(req: IncomingMessage): boolean {
    if (!options.adminToken) return true;
    const token = bearerToken(req.headers.authorization);
    return token !== undefined && sameSecret(token, options.adminToken);
  }

  function summary(): CacheSummary {
    const totals = store.totals();
    return {
      counters: { ...metrics.counters },
      objects: totals.objects,
      storedBytes: totals.bytes,
      pinnedObjects: store.pinnedHashes().length,
      reservedBytes: space.reservedBytes,
      fillsInFlight: flights.size,
    };
  }

  async function prefetch(sha256: string, sources: readonly string[], pin: boolean): Promise<PrefetchOutcome> {
    if (pin) store.pin(sha256);
    if (sources.length > 0) store.addSources(sha256, sources.slice(0, MAX_ORIGINS));
    if (store.lookup(sha256) && (await ensureVerified(sha256))) return { sha256, status: 'present' };
    const flight = contentFlight(sha256, sources, []);
    if (!flight) return { sha256, status: 'failed', error: 'no source known' };
    try {
      await flight.finished;
      return flight.stored ? { sha256, status: 'fetched' } : { sha256, status: 'failed', error: 'could not be stored' };
    } catch (err) {
      return { sha256, status: 'failed', error: (err as Error).message };
    }
  }

  function ingest(sha256: string, body: AsyncIterable<Buffer>, pin: boolean): Promise<IngestOutcome> {
    return ingestObject({ store, space, metrics, ensureVerified }, sha256, body, pin);
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    res.once('close', () =>
      log.debug('request', {
        method: req.method,
        path: req.url?.split('?')[0],
        status: res.statusCode,
        cache: res.getHeader('x-cache'),
        complete: res.writableFinished,
        ms: Number(process.hrtime.bigint() - started) / 1e6,
        client: req.socket.remoteAddress,
      }),
    );
    try {
      const rawUrl = req.url ?? '/';
      if (!rawUrl.startsWith('/')) return replyError(res, 'BAD_REQUEST', 'origin-form only');
      const q = rawUrl.indexOf('?');
      const pathname = q < 0 ? rawUrl : rawUrl.slice(0, q);
      const query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1));
      if (pathname === '/healthz') return reply(res, 200, { ok: true });
      if (pathname.startsWith('/admin/')) {
        if (!authorisedAdmin(req)) return deny(res);
        return await handleAdmin(req, res, pathname, {
          store,
          summary,
          prefetch,
          ingest,
          importRoots: options.importRoots ?? [],
          log,
        });
      }
      const delivery = query.has('cacheHostOrigin') && !pathname.startsWith('/sha256/');
      if (!(delivery && options.deliveryWithoutToken) && !authorisedChild(req)) return deny(res);
      if (pathname === '/stats') return reply(res, 200, summary());
      if (pathname === '/metrics') {
        const s = summary();
        res.setHeader('content-type', 'text/plain; version=0.0.4');
        res.end(metrics.prometheus({ ...s }));
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('allow', 'GET, HEAD');
        return replyError(res, 'METHOD', 'GET or HEAD');
      }
      const via = viaList(req.headers[VIA_HEADER]);
      if (via.includes(instanceId) || via.length > MAX_HOPS) {
        return replyError(res, 'LOOP', 'this cache is already on the request path');
      }
      const content = /^\/sha256\/([^/]*)$/.exec(pathname);
      if (content) {
        const sha = content[1]!;
        if (!SHA256_HEX.test(sha)) return replyError(res, 'BAD_HASH', 'expected 64 lower-case hex digits');
        return await serveContent(req, res, sha, query, via);
      }
      if (delivery) return await serveDelivery(req, res, rawUrl, via);
      return replyError(res, 'NOT_FOUND', 'use /sha256/<hash> or ?cacheHostOrigin=');
    } catch (err) {
      log.error('request failed', { url: req.url, error: (err as Error).message });
      if (!res.headersSent) replyError(res, 'INTERNAL', 'internal error');
      else res.destroy();
    }
  }

  function deny(res: ServerResponse): void {
    metrics.counters.deniedRequests++;
    res.setHeader('www-authenticate', 'Bearer');
    replyError(res, 'UNAUTHORIZED', 'bearer token required');
  }

  let listening = false;
  const cache: ContentCache = {
    async listen() {
      const host = options.bindAddress ?? '0.0.0.0';
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.port ?? 0, host, () => resolve());
      });
      if (tlsServer) {
        await new Promise<void>((resolve, reject) => {
          tlsServer.once('error', reject);
          tlsServer.listen(options.tls?.port ?? 0, host, () => resolve());
        });
      }
      listening = true;
      const addr = server.address() as AddressInfo;
      log.info('content cache listening', { address: addr.address, port: addr.port, tls: tlsServer ? (tlsServer.address() as AddressInfo).port : null, parents });
      return addr;
    },
    async close() {
      for (const flight of flights.values()) flight.cancel(new Error('cache shutting down'));
      const closing = [server, tlsServer].map((s) =>
        s && listening ? new Promise<void>((resolve) => s.close(() => resolve())) : Promise.resolve(),
      );
      for (const socket of sockets) socket.destroy();
      await Promise.all(closing);
      await Promise.allSettled([...flights.values()].map((f) => f.finished));
      await Promise.allSettled([...verifying.values()]);
      httpAgent.destroy();
      httpsAgent.destroy();
      store.close();
      listening = false;
    },
    address: () => (server.address() as AddressInfo | null) ?? undefined,
    tlsAddress: () => (tlsServer?.address() as AddressInfo | null) ?? undefined,
    get url() {
      const addr = server.address() as AddressInfo | null;
      if (!addr) throw new Error('not listening');
      const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      return `http://${host}:${addr.port}`;
    },
    metrics,
    store,
    summary,
    prefetch,
  };
  return cache;
}
