// IoT Edge module entry point: configuration from the environment, SIGTERM for a clean shutdown.
import { readFileSync } from 'node:fs';
import { createContentCache } from './cacheServer.ts';
import { deriveChildToken } from './accessTokens.ts';
import { jsonLogger } from './log.ts';
import type { LogLevel } from './log.ts';

const env = process.env;
const log = jsonLogger((env.CACHE_LOG_LEVEL as LogLevel | undefined) ?? 'info');

function list(value: string | undefined): string[] {
  return (value ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}

/** "10GiB", "500MB", "1048576" */
function bytes(value: string | undefined, fallback: number): number {
  if (!value) return fallback;
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?)?$/i.exec(value.trim());
  if (!m) throw new Error(`not a size: ${value}`);
  const unit = (m[2] ?? '').toUpperCase();
  const power = { '': 0, K: 1, M: 2, G: 3, T: 4 }[unit.charAt(0) as '' | 'K' | 'M' | 'G' | 'T'];
  const base = unit.includes('I') || unit.length === 1 ? 1024 : 1000;
  return Math.floor(Number(m[1]) * base ** power);
}

const port = Number(env.CACHE_PORT ?? 8080);
// A nested IoT Edge device learns its parent gateway from the runtime; its cache listens on the same port.
const parents = list(env.CACHE_PARENT_URLS);
if (parents.length === 0 && env.IOTEDGE_PARENTHOSTNAME) {
  const scheme = env.CACHE_PARENT_TLS === '1' ? 'https' : 'http';
  parents.push(`${scheme}://${env.IOTEDGE_PARENTHOSTNAME}:${env.CACHE_PARENT_PORT ?? port}`);
}
const secret = env.CACHE_TOKEN_SECRET || undefined;
const deviceId = env.IOTEDGE_DEVICEID;
const upstreamToken = env.CACHE_UPSTREAM_TOKEN || (secret && deviceId ? deriveChildToken(secret, deviceId) : undefined);

const cache = createContentCache({
  stateDir: env.CACHE_STATE_DIR ?? '/var/lib/edge-ota/content-cache',
  parents,
  directOrigins: env.CACHE_DIRECT_ORIGINS ? env.CACHE_DIRECT_ORIGINS === '1' : parents.length === 0,
  originHosts: list(env.CACHE_ORIGIN_HOSTS),
  contentOriginHosts: env.CACHE_CONTENT_ORIGIN_HOSTS ? list(env.CACHE_CONTENT_ORIGIN_HOSTS) : undefined,
  quotaBytes: bytes(env.CACHE_QUOTA, 10 * 1024 ** 3),
  highWatermark: env.CACHE_HIGH_WATERMARK ? Number(env.CACHE_HIGH_WATERMARK) : undefined,
  lowWatermark: env.CACHE_LOW_WATERMARK ? Number(env.CACHE_LOW_WATERMARK) : undefined,
  upstreamIdleTimeoutMs: env.CACHE_UPSTREAM_IDLE_TIMEOUT_MS ? Number(env.CACHE_UPSTREAM_IDLE_TIMEOUT_MS) : undefined,
  minFreeBytes: bytes(env.CACHE_MIN_FREE, 64 * 1024 ** 2),
  childTokenSecret: secret,
  deliveryWithoutToken: env.CACHE_DELIVERY_WITHOUT_TOKEN === '1',
  adminToken: env.CACHE_ADMIN_TOKEN || undefined,
  upstreamToken,
  upstreamCa: env.CACHE_UPSTREAM_CA_FILE ? readFileSync(env.CACHE_UPSTREAM_CA_FILE) : undefined,
  bindAddress: env.CACHE_BIND_ADDRESS ?? '0.0.0.0',
  port,
  tls:
    env.CACHE_TLS_CERT_FILE && env.CACHE_TLS_KEY_FILE
      ? { cert: readFileSync(env.CACHE_TLS_CERT_FILE), key: readFileSync(env.CACHE_TLS_KEY_FILE), port: Number(env.CACHE_TLS_PORT ?? 8443) }
      : undefined,
  importRoots: list(env.CACHE_IMPORT_ROOTS),
  logger: log,
});

if (!env.CACHE_ADMIN_TOKEN) log.warn('CACHE_ADMIN_TOKEN is not set: the admin API is open to anyone who can reach the port');
await cache.listen();

let stopping = false;
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { signal });
    // Closing marks the index clean, so the next start does not re-hash every object.
    cache.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error('shutdown failed', { error: (err as Error).message });
        process.exit(1);
      },
    );
  });
}
