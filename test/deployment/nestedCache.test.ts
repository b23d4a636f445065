import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { HubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { startHubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { startLocalEdge } from '../../deployment/src/localRunner.ts';
import { generateManifest } from '../../deployment/src/manifestCheck.ts';
import { hasNginx, proxyCertificates, proxyOf, renderProxyConfig, startProxy } from './support/apiProxyNginx.ts';
import { freePort } from '../support/freePort.ts';

// The nested design end to end, from the generated manifests: a child gateway's contentCache (child manifest, run by
// the local runner) fills from its parent's contentCache (parent manifest) through the parent's API proxy (the
// configuration from that manifest, in real nginx, over TLS verified with the trust bundle the child manifest mounts).
// The child may not reach the origin itself, so the bytes can only have come through the parent.

describe.skipIf(!hasNginx)('a child gateway\'s cache behind its parent\'s API proxy', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  let hub: HubProcess | undefined;

  afterAll(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await hub?.stop();
  });

  it('fills from the parent\'s cache through the proxy, and the parent keeps the object for its other children', async () => {
    hub = await startHubProcess({ caDir: process.env.EDGE_OTA_TEST_CA_DIR });
    const blob = randomBytes(300_000);
    const hash = createHash('sha256').update(blob).digest('hex');
    let originHits = 0;
    const origin = createServer((_req, res) => {
      originHits += 1;
      res.writeHead(200, { 'content-length': blob.length }).end(blob);
    });
    await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => origin.close(() => resolve())));
    const originUrl = `http://127.0.0.1:${(origin.address() as { port: number }).port}/artifacts/app.bin`;

    // Parent: the API-proxy variant; the runner runs its cache (the proxy module itself is nginx, below).
    const parentCachePort = await freePort();
    const parentManifest = generateManifest({ platform: 'amd64', registry: 'localhost:5000', apiProxy: true }).manifest;
    const parent = await startLocalEdge({
      hubInfo: hub.info, deviceId: 'gw-top', manifest: parentManifest, stateDir: mkdtempSync(path.join(tmpdir(), 'gw-top-')), createDevice: true,
      modules: ['contentCache'], envOverrides: { contentCache: { CACHE_PORT: String(parentCachePort), CACHE_BIND_ADDRESS: '127.0.0.1' } }, log: () => {},
    });
    cleanups.push(() => parent.stop());
    expect(parent.skipped.get('apiProxy')).toBe('not selected');

    const proxyPort = await freePort();
    const { env, config } = proxyOf(parentManifest);
    const certificates = proxyCertificates('localhost');
    const proxy = await startProxy(certificates.dir, renderProxyConfig(config, { ...env, NGINX_DEFAULT_PORT: `127.0.0.1:${proxyPort}`, EDGE_OTA_CACHE_ADDRESS: `127.0.0.1:${parentCachePort}` },
      env.PROXY_CONFIG_ENV_VAR_LIST!.split(',')), proxyPort);
    cleanups.push(() => proxy.stop());

    // Child: the nested variant. Its trust bundle (config.toml trust_bundle_cert) is bound into the cache; locally the
    // runner maps that host path under the state dir, so the proxy's CA goes there.
    const childState = mkdtempSync(path.join(tmpdir(), 'gw-child-'));
    const trustBundle = path.join(childState, 'host', 'var', 'aziot', 'certs', 'azure-iot-test-only.root.ca.cert.pem');
    mkdirSync(path.dirname(trustBundle), { recursive: true });
    copyFileSync(certificates.certFile, trustBundle);
    const childCachePort = await freePort();
    const child = await startLocalEdge({
      hubInfo: hub.info, deviceId: 'gw-child', manifest: generateManifest({ platform: 'amd64', registry: 'localhost:5000', nestedParent: true }).manifest,
      stateDir: childState, createDevice: true, modules: ['contentCache'], parentHostName: 'localhost',
      // Only the ports differ from a gateway: the proxy listens on 443 there.
      envOverrides: { contentCache: { CACHE_PORT: String(childCachePort), CACHE_BIND_ADDRESS: '127.0.0.1', CACHE_PARENT_PORT: String(proxyPort) } }, log: () => {},
    });
    cleanups.push(() => child.stop());
    const childCache = child.modules.get('contentCache')!;
    expect(childCache.environment).toMatchObject({ CACHE_PARENT_TLS: '1', CACHE_DIRECT_ORIGINS: '0', CACHE_UPSTREAM_CA_FILE: trustBundle, IOTEDGE_PARENTHOSTNAME: 'localhost' });

    const deadline = Date.now() + 20_000;
    for (const port of [parentCachePort, childCachePort]) {
      while (!(await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false))) {
        if (Date.now() > deadline) throw new Error(`cache on ${port} did not start: ${childCache.output}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }

    const response = await fetch(`http://127.0.0.1:${childCachePort}/sha256/${hash}?origin=${encodeURIComponent(originUrl)}`);
    expect(response.status, childCache.output).toBe(200);
    expect(createHash('sha256').update(Buffer.from(await response.arrayBuffer())).digest('hex')).toBe(hash);
    expect(originHits).toBe(1);
    // The parent now has it: another child behind the same parent would not touch the origin again.
    // (The parent publishes the object once its hash is checked, a moment after the child has its bytes.)
    const hitDeadline = Date.now() + 10_000;
    for (;;) {
      const fromParent = await fetch(`http://127.0.0.1:${parentCachePort}/sha256/${hash}`);
      expect(fromParent.status).toBe(200);
      await fromParent.arrayBuffer();
      if (fromParent.headers.get('x-cache') === 'HIT') break;
      if (Date.now() > hitDeadline) throw new Error('the parent never served the object from its store');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(originHits).toBe(1);
  }, 90_000);
});
