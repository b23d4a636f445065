import { spawn, spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { chmodSync, closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../deployment/src/manifest.ts';
import { generateManifest } from '../../deployment/src/manifestCheck.ts';

// The API proxy's nginx configuration travels base64 in a module twin and is only parsed on a gateway. Here it is
// rendered the way the proxy module renders it (substitute the variables in PROXY_CONFIG_ENV_VAR_LIST, keep or drop
// #if_tag blocks) and checked with `nginx -t`, for a top-layer and for a lower-layer gateway.

const hasNginx = spawnSync('nginx', ['-v']).status === 0 && spawnSync('openssl', ['version']).status === 0;

/** The proxy module's rendering: `${VAR}` substitution, then `#if_tag ${VAR}` / `#if_tag !${VAR}` blocks. */
function renderProxyConfig(template: string, env: Record<string, string>, listed: readonly string[]): string {
  let text = template;
  for (const name of listed) if (env[name] !== undefined) text = text.split(`\${${name}}`).join(env[name]);
  const truthy = (value: string): boolean => value !== '' && value !== '0' && value.toLowerCase() !== 'false';
  return text.replace(/#if_tag (!?)(.*)\n([\s\S]*?)#endif_tag (!?)\2\n/g, (_all, not: string, value: string, body: string) =>
    truthy(value.trim()) !== (not === '!') ? body : '',
  );
}

function proxyOf(manifest: JsonObject): { env: Record<string, string>; config: string } {
  const agent = ((manifest.modulesContent as JsonObject).$edgeAgent as JsonObject)['properties.desired'] as { modules: Record<string, { env: Record<string, { value: string }> }> };
  const env = Object.fromEntries(Object.entries(agent.modules.apiProxy!.env).map(([k, v]) => [k, v.value]));
  const twin = ((manifest.modulesContent as JsonObject).apiProxy as JsonObject)['properties.desired'] as { proxy_config: string };
  return { env, config: Buffer.from(twin.proxy_config, 'base64').toString('utf8') };
}

describe.skipIf(!hasNginx)('the API proxy configuration', () => {
  const cases = [
    { layer: 'top', options: { apiProxy: true }, parentHost: undefined, registryBackend: 'http://registry:5000' },
    { layer: 'middle', options: { apiProxy: true, nestedParent: true }, parentHost: 'gw-top.factory.local', registryBackend: 'https://gw-top.factory.local:443' },
  ];

  it.each(cases)('parses with nginx -t on a $layer-layer gateway and routes the cache, the registry and edgeHub', ({ options, parentHost, registryBackend }) => {
    const { manifest } = generateManifest({ platform: 'amd64', registry: 'localhost:5000', ...options });
    const { env, config } = proxyOf(manifest);
    const rendered = renderProxyConfig(config, { ...env, ...(parentHost ? { IOTEDGE_PARENTHOSTNAME: parentHost } : {}) }, env.PROXY_CONFIG_ENV_VAR_LIST!.split(','));
    expect(rendered).not.toMatch(/\$\{|#if_tag/);
    expect(rendered).toContain('listen 443 ssl default_server;');
    expect(rendered).toContain('set $backend "http://contentCache:8080";');
    expect(rendered).toContain(`set $backend "${registryBackend}";`);
    expect(rendered).toContain('set $backend "https://edgeHub:443";');

    // The proxy module provides server.crt, private_key.pem and trustedCA.crt next to its configuration.
    const dir = mkdtempSync(path.join(tmpdir(), 'api-proxy-'));
    const openssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=gw.test',
      '-keyout', path.join(dir, 'private_key.pem'), '-out', path.join(dir, 'server.crt')], { encoding: 'utf8' });
    expect(openssl.status, openssl.stderr).toBe(0);
    copyFileSync(path.join(dir, 'server.crt'), path.join(dir, 'trustedCA.crt'));
    const file = path.join(dir, 'nginx.conf');
    writeFileSync(file, rendered);
    // The configuration logs to /dev/stdout, which cannot be opened on a socket (what Node's pipes are): give nginx a file.
    const stdout = openSync(path.join(dir, 'stdout.log'), 'w');
    const check = spawnSync('nginx', ['-t', '-e', 'stderr', '-p', `${dir}/`, '-c', file, '-g', `pid ${dir}/nginx.pid;`], { encoding: 'utf8', stdio: ['ignore', stdout, 'pipe'] });
    closeSync(stdout);
    expect(check.status, `${check.stderr}\n${readFileSync(file, 'utf8')}`).toBe(0);
  });

  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('relays cache requests (hash and Delivery Optimization URLs) to the cache with their headers, and the rest elsewhere', async () => {
    // A stand-in cache that echoes what reached it.
    const seen: Array<{ url: string; authorization: string | undefined; range: string | undefined }> = [];
    const cache = createServer((req, res) => {
      seen.push({ url: req.url ?? '', authorization: req.headers.authorization, range: req.headers.range });
      res.writeHead(200, { 'content-type': 'text/plain' }).end('from cache');
    });
    await new Promise<void>((resolve) => cache.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => cache.close(() => resolve())));
    const free = createNetServer();
    await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve));
    const proxyPort = (free.address() as { port: number }).port;
    await new Promise((resolve) => free.close(resolve));

    const { manifest } = generateManifest({ platform: 'amd64', registry: 'localhost:5000', apiProxy: true });
    const { env, config } = proxyOf(manifest);
    // On a gateway the cache is `contentCache:8080` on the module network; here it is the stand-in's address.
    const rendered = renderProxyConfig(config, { ...env, NGINX_DEFAULT_PORT: `127.0.0.1:${proxyPort}`, EDGE_OTA_CACHE_ADDRESS: `127.0.0.1:${(cache.address() as { port: number }).port}` },
      env.PROXY_CONFIG_ENV_VAR_LIST!.split(','));
    const dir = mkdtempSync(path.join(tmpdir(), 'api-proxy-'));
    chmodSync(dir, 0o755);
    spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=gw.test', '-addext', 'subjectAltName=DNS:gw.test',
      '-keyout', path.join(dir, 'private_key.pem'), '-out', path.join(dir, 'server.crt')]);
    copyFileSync(path.join(dir, 'server.crt'), path.join(dir, 'trustedCA.crt'));
    // Docker's embedded DNS (127.0.0.11) does not exist here: names must fail fast instead of after 30 s.
    writeFileSync(path.join(dir, 'nginx.conf'), rendered.replaceAll('resolver 127.0.0.11;', 'resolver 127.0.0.11; resolver_timeout 1s;'));
    const stdout = openSync(path.join(dir, 'stdout.log'), 'w');
    const nginx = spawn('nginx', ['-e', 'stderr', '-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid; worker_processes 1;`], { stdio: ['ignore', stdout, 'pipe'] });
    closeSync(stdout);
    let nginxErrors = '';
    nginx.stderr?.on('data', (chunk: Buffer) => (nginxErrors += chunk.toString()));
    const exited = new Promise<void>((resolve) => nginx.once('exit', () => resolve()));
    cleanups.push(async () => {
      if (nginx.exitCode === null && nginx.signalCode === null) nginx.kill('SIGTERM');
      await exited;
    });

    const ca = readFileSync(path.join(dir, 'server.crt'));
    const get = (pathAndQuery: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port: proxyPort, path: pathAndQuery, headers, ca, servername: 'gw.test', timeout: 5_000 }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', reject);
        req.end();
      });
    const deadline = Date.now() + 10_000;
    for (;;) {
      const up = await get('/sha256/' + '0'.repeat(64)).then(() => true, () => false);
      if (up) break;
      if (Date.now() > deadline) throw new Error(`nginx did not start: ${nginxErrors}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    seen.length = 0;

    const hash = 'ab'.repeat(32);
    expect(await get(`/sha256/${hash}`, { authorization: 'Bearer gw-line1.token', range: 'bytes=0-9' })).toEqual({ status: 200, body: 'from cache' });
    expect(await get('/filestreamingservice/files/abc?cacheHostOrigin=dl.delivery.mp.microsoft.com&P1=2')).toEqual({ status: 200, body: 'from cache' });
    expect(seen).toEqual([
      { url: `/sha256/${hash}`, authorization: 'Bearer gw-line1.token', range: 'bytes=0-9' },
      { url: '/filestreamingservice/files/abc?cacheHostOrigin=dl.delivery.mp.microsoft.com&P1=2', authorization: undefined, range: undefined },
    ]);
    // Not for the cache: relayed to edgeHub (unreachable here), never to the cache.
    const other = await get('/devices/gw-line1/messages/events');
    expect(other.status).toBeGreaterThanOrEqual(500);
    expect(seen).toHaveLength(2);
    // The cache paths are internal: a client cannot address the rewritten location directly.
    expect((await get(`/edge-ota-cache/sha256/${hash}`)).status).toBe(404);
    expect(seen).toHaveLength(2);
  }, 30_000);
});
