import { afterEach, describe, expect, it } from 'vitest';
import https from 'node:https';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Harness, blob, fetchRaw, sha256 } from './fixtures.ts';
import { deriveChildToken, verifyChildToken } from '../src/accessTokens.ts';

const h = new Harness();
afterEach(() => h.cleanup());
const SECRET = 'factory-line-7-secret';

describe('child tokens', () => {
  it('derives a token per device that verifies back to the device id and resists tampering', () => {
    const t = deriveChildToken(SECRET, 'plc.cell-3');
    expect(verifyChildToken(SECRET, t)).toBe('plc.cell-3');
    expect(verifyChildToken('other', t)).toBeUndefined();
    expect(verifyChildToken(SECRET, t.replace('plc.cell-3', 'plc.cell-4'))).toBeUndefined();
    expect(verifyChildToken(SECRET, `${t}x`)).toBeUndefined();
    expect(deriveChildToken(SECRET, 'a')).not.toBe(deriveChildToken(SECRET, 'b'));
  });

  it('requires a valid bearer token for content and metrics when a secret is set', async () => {
    const origin = await h.origin();
    const body = blob(10_000);
    origin.objects.set('/f', { body });
    const cache = await h.cache({ childTokenSecret: SECRET, adminToken: 'admin-secret' });
    const url = `${cache.url}/sha256/${sha256(body)}`;
    const from = { 'x-origin-url': `${origin.url}/f` };
    expect((await fetchRaw(url, { headers: from })).status).toBe(401);
    expect((await fetchRaw(url, { headers: { ...from, authorization: 'Bearer nonsense' } })).status).toBe(401);
    expect((await fetchRaw(`${cache.url}/metrics`)).status).toBe(401);
    expect(origin.requests).toHaveLength(0);
    const ok = await fetchRaw(url, { headers: { ...from, authorization: `Bearer ${deriveChildToken(SECRET, 'child-1')}` } });
    expect(ok.status).toBe(200);
    expect(ok.body.equals(body)).toBe(true);
    expect(cache.metrics.counters.deniedRequests).toBe(3);
    // Children's tokens do not open the admin API.
    const admin = await fetchRaw(`${cache.url}/admin/stats`, { headers: { authorization: `Bearer ${deriveChildToken(SECRET, 'child-1')}` } });
    expect(admin.status).toBe(401);
    expect((await fetchRaw(`${cache.url}/admin/stats`, { headers: { authorization: 'Bearer admin-secret' } })).status).toBe(200);
  });

  it('can serve Delivery Optimization clients, which cannot send tokens, while hashes still need one', async () => {
    const origin = await h.origin();
    const body = blob(10_000);
    origin.objects.set('/do/f', { body });
    const cache = await h.cache({ childTokenSecret: SECRET, originHosts: [origin.host], deliveryWithoutToken: true });
    const r = await fetchRaw(`${cache.url}/do/f?cacheHostOrigin=${origin.host}`);
    expect(r.status).toBe(200);
    expect(r.body.equals(body)).toBe(true);
    expect((await fetchRaw(`${cache.url}/sha256/${sha256(body)}`)).status).toBe(401);
    expect((await fetchRaw(`${cache.url}/do/f?cacheHostOrigin=example.com`)).status).toBe(403);
    const strict = await h.cache({ childTokenSecret: SECRET, originHosts: [origin.host] });
    expect((await fetchRaw(`${strict.url}/do/f?cacheHostOrigin=${origin.host}`)).status).toBe(401);
  });

  it('lets a child cache present its derived token to a parent that requires one', async () => {
    const origin = await h.origin();
    const body = blob(50_000);
    origin.objects.set('/f', { body });
    const parent = await h.cache({ childTokenSecret: SECRET });
    const child = await h.cache({ parents: [parent.url], upstreamToken: deriveChildToken(SECRET, 'gw-layer2') });
    const stranger = await h.cache({ parents: [parent.url] });
    const hash = sha256(body);
    const from = { 'x-origin-url': `${origin.url}/f` };
    expect((await fetchRaw(`${child.url}/sha256/${hash}`, { headers: from })).body.equals(body)).toBe(true);
    expect((await fetchRaw(`${stranger.url}/sha256/${hash}`, { headers: from })).status).toBe(502);
  });
});

describe('listeners', () => {
  it('binds to the configured address only', async () => {
    const cache = await h.cache({ bindAddress: '127.0.0.2' });
    const port = cache.address()!.port;
    expect(cache.address()!.address).toBe('127.0.0.2');
    expect((await fetchRaw(`http://127.0.0.2:${port}/healthz`)).status).toBe(200);
    await expect(fetchRaw(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow(/ECONNREFUSED/);
  });

  it('serves TLS next to plain HTTP and fills from an HTTPS parent', async () => {
    const dir = await h.dir();
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
    ]);
    const pem = { key: await readFile(key), cert: await readFile(cert) };
    const origin = await h.origin();
    const body = blob(200_000);
    origin.objects.set('/f', { body });
    const parent = await h.cache({ tls: { ...pem, port: 0 } });
    const tlsPort = parent.tlsAddress()!.port;
    const hash = sha256(body);
    const direct = await new Promise<Buffer>((resolve, reject) => {
      https
        .get(`https://127.0.0.1:${tlsPort}/sha256/${hash}`, { ca: pem.cert, headers: { 'x-origin-url': `${origin.url}/f` } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve(Buffer.concat(chunks)));
        })
        .on('error', reject);
    });
    expect(direct.equals(body)).toBe(true);
    const child = await h.cache({ parents: [`https://127.0.0.1:${tlsPort}`], upstreamCa: pem.cert });
    expect((await fetchRaw(`${child.url}/sha256/${hash}`)).body.equals(body)).toBe(true);
  });
});
