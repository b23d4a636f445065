import { afterEach, describe, expect, it } from 'vitest';
import { readdir } from 'node:fs/promises';
import http from 'node:http';
import { Harness, blob, fetchRaw, sha256, settled } from './fixtures.ts';

const h = new Harness();
afterEach(() => h.cleanup());

describe('upstream failure', () => {
  it('resumes with Range and If-Range on the next upstream when one dies mid-stream', async () => {
    const a = await h.origin();
    const b = await h.origin();
    const body = blob(3 << 20);
    a.objects.set('/f', { body, dieAfter: 1 << 20, etag: '"v1"' });
    b.objects.set('/f', { body, etag: '"v1"' });
    const cache = await h.cache();
    const hash = sha256(body);
    const r = await fetchRaw(`${cache.url}/sha256/${hash}`, { headers: { 'x-origin-url': [`${a.url}/f`, `${b.url}/f`] } });
    expect(r.cut).toBe(false);
    expect(r.body.equals(body)).toBe(true);
    const resumed = b.requestsFor('/f');
    expect(resumed).toHaveLength(1);
    // Whatever was in flight when the socket died is lost; the resume starts where the file ends.
    const offset = Number(/^bytes=(\d+)-$/.exec(resumed[0]!.headers.range ?? '')?.[1]);
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(1 << 20);
    expect(resumed[0]!.headers['if-range']).toBe('"v1"');
    await settled(cache);
    expect(cache.store.lookup(hash)?.verified).toBe(true);
  });

  it('restarts from a mirror whose validator differs (If-Range answered with 200) without corrupting the object', async () => {
    const a = await h.origin();
    const b = await h.origin();
    const body = blob(2 << 20);
    a.objects.set('/f', { body, dieAfter: 700_000, etag: '"a-tag"' });
    b.objects.set('/f', { body, etag: '"b-tag"' });
    const cache = await h.cache();
    const r = await fetchRaw(`${cache.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${a.url}/f,${b.url}/f` } });
    expect(r.body.equals(body)).toBe(true);
    expect(b.requestsFor('/f')[0]!.headers['if-range']).toBe('"a-tag"');
  });

  it('cuts clients that already got headers when every upstream dies, and publishes nothing', async () => {
    const a = await h.origin();
    const body = blob(2 << 20);
    a.objects.set('/f', { body, dieAfter: 500_000 });
    const cache = await h.cache();
    const hash = sha256(body);
    const agent = new http.Agent({ maxSockets: 5 });
    const results = await Promise.all(
      Array.from({ length: 5 }, () => fetchRaw(`${cache.url}/sha256/${hash}`, { headers: { 'x-origin-url': `${a.url}/f` }, agent })),
    );
    agent.destroy();
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.cut).toBe(true);
      expect(r.body.length).toBeLessThan(body.length);
    }
    expect(cache.store.lookup(hash)).toBeUndefined();
    expect(await readdir(cache.store.tempDir)).toEqual([]);
    expect(cache.metrics.counters.fillsFailed).toBe(1);
    // Both attempts on the one upstream were tried (bounded), the second one as a resume.
    expect(a.requestsFor('/f')).toHaveLength(2);
  });

  it('on a hash mismatch cuts every client, publishes nothing and does not poison the next try', async () => {
    const bad = await h.origin();
    const body = blob(1 << 20);
    bad.objects.set('/f', { body, corrupt: true });
    const cache = await h.cache();
    const hash = sha256(body);
    const url = `${cache.url}/sha256/${hash}`;
    const agent = new http.Agent({ maxSockets: 4 });
    const results = await Promise.all(
      Array.from({ length: 4 }, () => fetchRaw(url, { headers: { 'x-origin-url': `${bad.url}/f` }, agent })),
    );
    agent.destroy();
    for (const r of results) {
      expect(r.cut).toBe(true);
      // The last byte is held back until verification, so no client ever holds the complete corrupt object.
      expect(r.body.length).toBeLessThan(body.length);
    }
    expect(cache.store.lookup(hash)).toBeUndefined();
    expect(cache.metrics.counters.hashMismatches).toBe(1);
    expect(await readdir(cache.store.objectsDir)).toEqual([]);
    const good = await h.origin();
    good.objects.set('/f', { body });
    const retry = await fetchRaw(url, { headers: { 'x-origin-url': `${good.url}/f` } });
    expect(retry.body.equals(body)).toBe(true);
  });

  it('fails over when an upstream answers with an error status', async () => {
    const a = await h.origin();
    const b = await h.origin();
    const body = blob(10_000);
    b.objects.set('/f', { body });
    const cache = await h.cache();
    const r = await fetchRaw(`${cache.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': [`${a.url}/f`, `${b.url}/f`] } });
    expect(r.body.equals(body)).toBe(true);
    expect(a.requestsFor('/f')).toHaveLength(1);
  });

  it('hides an origin dying mid-transfer from a three-level chain: the top resumes, nobody below is cut', async () => {
    const a = await h.origin();
    const b = await h.origin();
    const body = blob(3 << 20);
    a.objects.set('/f', { body, dieAfter: 1 << 20, etag: '"t"' });
    b.objects.set('/f', { body, etag: '"t"' });
    const top = await h.cache();
    const mid = await h.cache({ parents: [top.url] });
    const leaf = await h.cache({ parents: [mid.url] });
    const hash = sha256(body);
    const agent = new http.Agent({ maxSockets: 20 });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        fetchRaw(`${leaf.url}/sha256/${hash}`, {
          headers: { 'x-origin-url': [`${a.url}/f`, `${b.url}/f`], ...(i % 2 ? { range: `bytes=${i * 1000}-` } : {}) },
          agent,
        }),
      ),
    );
    agent.destroy();
    results.forEach((r, i) => {
      expect(r.cut).toBe(false);
      expect(r.body.equals(i % 2 ? body.subarray(i * 1000) : body)).toBe(true);
    });
    expect(b.requestsFor('/f')[0]!.headers.range).toMatch(/^bytes=\d+-$/);
    for (const layer of [mid, leaf]) expect(layer.metrics.counters.upstreamRequests).toBe(1);
    expect(top.metrics.counters.upstreamRequests).toBe(2);
  });
});
