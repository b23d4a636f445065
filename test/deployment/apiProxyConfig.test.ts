import { createServer } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { afterEach, describe, expect, it } from 'vitest';
import { generateManifest } from '../../deployment/src/manifestCheck.ts';
import { checkConfig, hasNginx, proxyCertificates, proxyOf, renderProxyConfig, startProxy } from './support/apiProxyNginx.ts';
import { freePort } from '../support/freePort.ts';

// The API proxy's nginx configuration travels base64 in a module twin and is only parsed on a gateway. Here it is
// rendered the way the proxy module renders it and checked with nginx, for a top-layer and a lower-layer gateway.

describe.skipIf(!hasNginx)('the API proxy configuration', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

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
    const { dir } = proxyCertificates('gw.test');
    const check = checkConfig(dir, rendered);
    expect(check.status, `${check.stderr}\n${rendered}`).toBe(0);
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
    const proxyPort = await freePort();

    const { manifest } = generateManifest({ platform: 'amd64', registry: 'localhost:5000', apiProxy: true });
    const { env, config } = proxyOf(manifest);
    // On a gateway the cache is `contentCache:8080` on the module network; here it is the stand-in's address.
    const rendered = renderProxyConfig(config, { ...env, NGINX_DEFAULT_PORT: `127.0.0.1:${proxyPort}`, EDGE_OTA_CACHE_ADDRESS: `127.0.0.1:${(cache.address() as { port: number }).port}` },
      env.PROXY_CONFIG_ENV_VAR_LIST!.split(','));
    const proxy = await startProxy(proxyCertificates('gw.test').dir, rendered, proxyPort);
    cleanups.push(() => proxy.stop());

    const get = (pathAndQuery: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port: proxyPort, path: pathAndQuery, headers, ca: proxy.ca, servername: 'gw.test', timeout: 5_000 }, (res) => {
          let body = '';
          res.on('data', (chunk: Buffer) => (body += chunk.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('timeout', () => req.destroy(new Error('timeout')));
        req.on('error', reject);
        req.end();
      });

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
