import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { deriveChildToken } from '../src/accessTokens.ts';
import { CacheConfigurationError, cacheConfigurationFromEnvironment, parseSize } from '../src/configuration.ts';

// The module's settings: defaults, the nested-gateway parent from the IoT Edge runtime, and every bad value named
// with its setting, both here and from the real entry point (exit 2, one JSON log line per problem).

const noFiles = (file: string): Buffer => {
  throw new Error(`ENOENT: no such file ${file}`);
};

function problemsOf(env: NodeJS.ProcessEnv): Array<{ setting: string; message: string }> {
  try {
    cacheConfigurationFromEnvironment(env, noFiles);
  } catch (error) {
    if (error instanceof CacheConfigurationError) return [...error.problems];
    throw error;
  }
  throw new Error('expected a CacheConfigurationError');
}

describe('content cache configuration', () => {
  it('has working defaults: port 8080, 10 GiB quota, origins direct without a parent, and warns that the admin API is open', () => {
    const { options, logLevel, warnings } = cacheConfigurationFromEnvironment({}, noFiles);
    expect(options).toMatchObject({ port: 8080, bindAddress: '0.0.0.0', quotaBytes: 10 * 1024 ** 3, minFreeBytes: 64 * 1024 ** 2, parents: [], directOrigins: true, tls: undefined });
    expect(logLevel).toBe('info');
    expect(warnings).toEqual([expect.stringMatching(/^CACHE_ADMIN_TOKEN is not set/)]);
  });

  it('finds the parent cache of a nested gateway from IOTEDGE_PARENTHOSTNAME and derives its upstream token', () => {
    const { options } = cacheConfigurationFromEnvironment(
      { IOTEDGE_PARENTHOSTNAME: 'plant-top', IOTEDGE_DEVICEID: 'line-1', CACHE_PORT: '9090', CACHE_PARENT_TLS: '1', CACHE_TOKEN_SECRET: 's3cret', CACHE_ADMIN_TOKEN: 'a' },
      noFiles,
    );
    expect(options).toMatchObject({ parents: ['https://plant-top:9090'], directOrigins: false, port: 9090, upstreamToken: deriveChildToken('s3cret', 'line-1') });
  });

  it('reads sizes, fractions, lists and the TLS files it is given', () => {
    const files = (file: string): Buffer => Buffer.from(`contents of ${file}`);
    const { options } = cacheConfigurationFromEnvironment(
      {
        CACHE_QUOTA: '2GiB', CACHE_MIN_FREE: '500MB', CACHE_HIGH_WATERMARK: '0.8', CACHE_LOW_WATERMARK: '0.5', CACHE_ORIGIN_HOSTS: 'a.example, b.example:8443',
        CACHE_TLS_CERT_FILE: '/certs/cache.pem', CACHE_TLS_KEY_FILE: '/certs/cache.key', CACHE_TLS_PORT: '0', CACHE_UPSTREAM_IDLE_TIMEOUT_MS: '5000',
      },
      files,
    );
    expect(options).toMatchObject({ quotaBytes: 2 * 1024 ** 3, minFreeBytes: 500_000_000, highWatermark: 0.8, lowWatermark: 0.5, originHosts: ['a.example', 'b.example:8443'], upstreamIdleTimeoutMs: 5000 });
    expect(options.tls).toEqual({ cert: Buffer.from('contents of /certs/cache.pem'), key: Buffer.from('contents of /certs/cache.key'), port: 0 });
  });

  it('names every bad setting at once, each with what it must be', () => {
    const problems = problemsOf({
      CACHE_PORT: '80a', CACHE_QUOTA: 'lots', CACHE_HIGH_WATERMARK: '1.5', CACHE_LOW_WATERMARK: '0', CACHE_PARENT_URLS: 'ftp://parent', CACHE_LOG_LEVEL: 'verbose',
      CACHE_DIRECT_ORIGINS: 'yes', CACHE_UPSTREAM_IDLE_TIMEOUT_MS: '-1', CACHE_TLS_CERT_FILE: '/missing.pem', CACHE_UPSTREAM_CA_FILE: '/missing-ca.pem',
    });
    expect(problems.map((p) => p.setting).sort()).toEqual([
      'CACHE_DIRECT_ORIGINS', 'CACHE_HIGH_WATERMARK', 'CACHE_LOG_LEVEL', 'CACHE_LOW_WATERMARK', 'CACHE_PARENT_URLS', 'CACHE_PORT', 'CACHE_QUOTA',
      'CACHE_TLS_CERT_FILE', 'CACHE_TLS_KEY_FILE', 'CACHE_UPSTREAM_CA_FILE', 'CACHE_UPSTREAM_IDLE_TIMEOUT_MS',
    ]);
    expect(problems).toContainEqual({ setting: 'CACHE_PORT', message: 'must be a port number (0-65535), not "80a"' });
    expect(problems).toContainEqual({ setting: 'CACHE_TLS_CERT_FILE', message: 'cannot read /missing.pem: ENOENT: no such file /missing.pem' });
  });

  it('refuses a low watermark that is not below the high one, and a port above 65535', () => {
    expect(problemsOf({ CACHE_HIGH_WATERMARK: '0.6', CACHE_LOW_WATERMARK: '0.7' })).toEqual([{ setting: 'CACHE_LOW_WATERMARK', message: 'must be below CACHE_HIGH_WATERMARK (0.6)' }]);
    expect(problemsOf({ CACHE_PORT: '70000' })).toEqual([{ setting: 'CACHE_PORT', message: 'must be a port number (0-65535), not "70000"' }]);
  });

  it('parses sizes in binary and decimal units', () => {
    expect([parseSize('1048576'), parseSize('64k'), parseSize('1.5GiB'), parseSize('2MB'), parseSize('ten')]).toEqual([1048576, 65536, 1.5 * 1024 ** 3, 2_000_000, undefined]);
  });

  it('the entry point exits 2 with one log line per bad setting and does not start', async () => {
    const main = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'main.ts');
    const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', main], {
      env: { PATH: process.env.PATH, CACHE_PORT: 'eighty', CACHE_QUOTA: '1XB', CACHE_STATE_DIR: '/nonexistent/never-created' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(2);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; setting: string });
    expect(lines.map((l) => [l.msg, l.setting])).toEqual([['invalid configuration', 'CACHE_PORT'], ['invalid configuration', 'CACHE_QUOTA']]);
  }, 20_000);
});
