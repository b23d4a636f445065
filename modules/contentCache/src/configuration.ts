import { readFileSync } from 'node:fs';
import { deriveChildToken } from './accessTokens.ts';
import type { ContentCacheOptions } from './cacheServer.ts';
import type { LogLevel } from './log.ts';

// The module's settings from its environment (the deployment's `env`, plus IOTEDGE_* from the runtime), checked
// in full before anything starts: every bad value is named with the setting it came from, so a typo in a
// deployment fails the module's start with a message that says what to fix, instead of a NaN port or a quota
// of nothing. The table of settings is in the README.

export interface ConfigurationProblem {
  setting: string;
  message: string;
}

export class CacheConfigurationError extends Error {
  readonly problems: readonly ConfigurationProblem[];

  constructor(problems: readonly ConfigurationProblem[]) {
    super(`invalid configuration: ${problems.map((p) => `${p.setting} ${p.message}`).join('; ')}`);
    this.name = 'CacheConfigurationError';
    this.problems = problems;
  }
}

export interface CacheConfiguration {
  options: Omit<ContentCacheOptions, 'logger'>;
  logLevel: LogLevel;
  /** Fine to run with, worth saying at start. */
  warnings: string[];
}

const logLevels: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];

/** Throws CacheConfigurationError listing every bad setting. `readFile` reads the certificate and CA files. */
export function cacheConfigurationFromEnvironment(env: NodeJS.ProcessEnv, readFile: (file: string) => Buffer = (file) => readFileSync(file)): CacheConfiguration {
  const problems: ConfigurationProblem[] = [];
  const bad = (setting: string, message: string): undefined => {
    problems.push({ setting, message });
    return undefined;
  };
  const text = (name: string): string | undefined => (env[name] === undefined || env[name] === '' ? undefined : env[name]);
  const list = (name: string): string[] => (text(name) ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  const port = (name: string, fallback: number): number => {
    const value = text(name);
    if (value === undefined) return fallback;
    const parsed = /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
    return parsed <= 65535 ? parsed : (bad(name, `must be a port number (0-65535), not ${JSON.stringify(value)}`) ?? fallback);
  };
  const size = (name: string, fallback: number): number => {
    const value = text(name);
    if (value === undefined) return fallback;
    return parseSize(value) ?? bad(name, `must be a size such as 10GiB, 500MB or 1048576, not ${JSON.stringify(value)}`) ?? fallback;
  };
  const fraction = (name: string): number | undefined => {
    const value = text(name);
    if (value === undefined) return undefined;
    const parsed = Number(value);
    return parsed > 0 && parsed <= 1 ? parsed : bad(name, `must be a fraction above 0 and at most 1, not ${JSON.stringify(value)}`);
  };
  const flag = (name: string): boolean | undefined => {
    const value = text(name);
    if (value === undefined) return undefined;
    return value === '1' ? true : value === '0' ? false : bad(name, `must be 1 or 0, not ${JSON.stringify(value)}`);
  };
  const file = (name: string): Buffer | undefined => {
    const value = text(name);
    if (value === undefined) return undefined;
    try {
      return readFile(value);
    } catch (error) {
      return bad(name, `cannot read ${value}: ${(error as Error).message}`);
    }
  };

  const logLevel = text('CACHE_LOG_LEVEL') ?? 'info';
  if (!logLevels.includes(logLevel as LogLevel)) bad('CACHE_LOG_LEVEL', `must be one of ${logLevels.join(', ')}, not ${JSON.stringify(logLevel)}`);

  const listenPort = port('CACHE_PORT', 8080);
  // A nested IoT Edge device learns its parent gateway from the runtime; the parent's cache listens on the same port.
  const parents = list('CACHE_PARENT_URLS');
  const parentTls = flag('CACHE_PARENT_TLS') ?? false;
  const parentPort = port('CACHE_PARENT_PORT', listenPort);
  const parentHost = text('IOTEDGE_PARENTHOSTNAME');
  if (parents.length === 0 && parentHost) parents.push(`${parentTls ? 'https' : 'http'}://${parentHost}:${parentPort}`);
  for (const parent of parents) {
    if (!isHttpUrl(parent)) bad('CACHE_PARENT_URLS', `${JSON.stringify(parent)} is not an http(s) URL`);
  }

  const highWatermark = fraction('CACHE_HIGH_WATERMARK');
  const lowWatermark = fraction('CACHE_LOW_WATERMARK');
  if ((lowWatermark ?? 0.75) >= (highWatermark ?? 0.9)) bad('CACHE_LOW_WATERMARK', `must be below CACHE_HIGH_WATERMARK (${highWatermark ?? 0.9})`);

  const idleText = text('CACHE_UPSTREAM_IDLE_TIMEOUT_MS');
  const upstreamIdleTimeoutMs = idleText === undefined ? undefined : /^[1-9]\d{0,8}$/.test(idleText) ? Number(idleText) : bad('CACHE_UPSTREAM_IDLE_TIMEOUT_MS', `must be a whole number of milliseconds, not ${JSON.stringify(idleText)}`);

  const cert = file('CACHE_TLS_CERT_FILE');
  const key = file('CACHE_TLS_KEY_FILE');
  if (text('CACHE_TLS_CERT_FILE') !== undefined && text('CACHE_TLS_KEY_FILE') === undefined) bad('CACHE_TLS_KEY_FILE', 'must be set with CACHE_TLS_CERT_FILE');
  if (text('CACHE_TLS_KEY_FILE') !== undefined && text('CACHE_TLS_CERT_FILE') === undefined) bad('CACHE_TLS_CERT_FILE', 'must be set with CACHE_TLS_KEY_FILE');
  const tlsPort = port('CACHE_TLS_PORT', 8443);

  const secret = text('CACHE_TOKEN_SECRET');
  const deviceId = text('IOTEDGE_DEVICEID');
  const upstreamToken = text('CACHE_UPSTREAM_TOKEN') ?? (secret && deviceId ? deriveChildToken(secret, deviceId) : undefined);
  const upstreamCa = file('CACHE_UPSTREAM_CA_FILE');
  const directOrigins = flag('CACHE_DIRECT_ORIGINS') ?? parents.length === 0;
  const deliveryWithoutToken = flag('CACHE_DELIVERY_WITHOUT_TOKEN') ?? false;
  const quotaBytes = size('CACHE_QUOTA', 10 * 1024 ** 3);
  const minFreeBytes = size('CACHE_MIN_FREE', 64 * 1024 ** 2);

  if (problems.length > 0) throw new CacheConfigurationError(problems);
  const warnings: string[] = [];
  const adminToken = text('CACHE_ADMIN_TOKEN');
  if (!adminToken) warnings.push('CACHE_ADMIN_TOKEN is not set: the admin API is open to anyone who can reach the port');
  return {
    logLevel: logLevel as LogLevel,
    warnings,
    options: {
      stateDir: text('CACHE_STATE_DIR') ?? '/var/lib/edge-ota/content-cache',
      parents,
      directOrigins,
      originHosts: list('CACHE_ORIGIN_HOSTS'),
      contentOriginHosts: text('CACHE_CONTENT_ORIGIN_HOSTS') === undefined ? undefined : list('CACHE_CONTENT_ORIGIN_HOSTS'),
      quotaBytes,
      highWatermark,
      lowWatermark,
      upstreamIdleTimeoutMs,
      minFreeBytes,
      childTokenSecret: secret,
      deliveryWithoutToken,
      adminToken,
      upstreamToken,
      upstreamCa,
      bindAddress: text('CACHE_BIND_ADDRESS') ?? '0.0.0.0',
      port: listenPort,
      tls: cert && key ? { cert, key, port: tlsPort } : undefined,
      importRoots: list('CACHE_IMPORT_ROOTS'),
    },
  };
}

/** "10GiB", "500MB", "64k", "1048576"; undefined when it is not a size. */
export function parseSize(value: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?)?$/i.exec(value.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? '').toUpperCase();
  const power = { '': 0, K: 1, M: 2, G: 3, T: 4 }[unit.charAt(0) as '' | 'K' | 'M' | 'G' | 'T'];
  const base = unit.includes('I') || unit.length === 1 ? 1024 : 1000;
  return Math.floor(Number(m[1]) * base ** power);
}

function isHttpUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:';
  } catch {
    return false;
  }
}
