import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { Harness, blob, fetchRaw, sha256, until, settled } from './fixtures.ts';
import type { ContentCache } from '../src/cacheServer.ts';

const h = new Harness();
afterEach(() => h.cleanup());

/** top talks to the origin, mid and leaf only to their parent (ISA-95 layers 3..1). */
async function chain() {
  const origin = await h.origin();
  const top = await h.cache();
  const mid = await h.cache({ parents: [top.url] });
  const leaf = await h.cache({ parents: [mid.url] });
  return { origin, top, mid, leaf };
}

function upstreamRequests(c: ContentCache): number {
  return c.metrics.counters.upstreamRequests;
}

describe('single flight and nesting', () => {
  it('turns 50 concurrent misses into one origin fetch', async () => {
    const origin = await h.origin();
    const body = blob(2 << 20);
    origin.objects.set('/x', { body, holdAt: 256 << 10 });
    const cache = await h.cache();
    const url = `${cache.url}/sha256/${sha256(body)}`;
    const agent = new http.Agent({ maxSockets: 50 });
    const all = Array.from({ length: 50 }, () => fetchRaw(url, { headers: { 'x-origin-url': `${origin.url}/x` }, agent }));
    await origin.holding;
    await until(() => cache.metrics.counters.missRequests === 50, 'all 50 requests to join the fill');
    origin.release();
    const results = await Promise.all(all);
    agent.destroy();
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(r.body.equals(body)).toBe(true);
    }
    expect(origin.requestsFor('/x')).toHaveLength(1);
    expect(cache.metrics.counters.fillsStarted).toBe(1);
    expect(cache.metrics.counters.missRequests).toBe(50);
  });

  it('fills a three-level chain with one fetch per level for 50 concurrent misses at the bottom', async () => {
    const { origin, top, mid, leaf } = await chain();
    const body = blob(2 << 20);
    origin.objects.set('/fw.img', { body, holdAt: 512 << 10 });
    const hash = sha256(body);
    const agent = new http.Agent({ maxSockets: 50 });
    const all = Array.from({ length: 50 }, () =>
      fetchRaw(`${leaf.url}/sha256/${hash}`, { headers: { 'x-origin-url': `${origin.url}/fw.img` }, agent }),
    );
    await origin.holding;
    await until(() => leaf.metrics.counters.missRequests === 50, 'all 50 requests to join the fill');
    origin.release();
    const results = await Promise.all(all);
    agent.destroy();
    for (const r of results) expect(r.body.equals(body)).toBe(true);
    await settled(top, mid, leaf);
    expect(origin.requestsFor('/fw.img')).toHaveLength(1);
    for (const layer of [top, mid, leaf]) {
      expect(layer.metrics.counters.fillsStarted).toBe(1);
      expect(upstreamRequests(layer)).toBe(1);
      expect(layer.store.lookup(hash)?.size).toBe(body.length);
    }
    // Another child at the middle layer is now a hit there.
    const fromMid = await fetchRaw(`${mid.url}/sha256/${hash}`);
    expect(fromMid.headers['x-cache']).toBe('HIT');
    expect(origin.requestsFor('/fw.img')).toHaveLength(1);
  });

  it('lets a child fill from a parent that learnt the source from a prefetch', async () => {
    const { origin, top, leaf } = await chain();
    const body = blob(300_000);
    origin.objects.set('/pkg.deb', { body });
    const hash = sha256(body);
    expect(await top.prefetch(hash, [`${origin.url}/pkg.deb`], true)).toEqual({ sha256: hash, status: 'fetched' });
    const r = await fetchRaw(`${leaf.url}/sha256/${hash}`);
    expect(r.status).toBe(200);
    expect(r.body.equals(body)).toBe(true);
  });

  it('never lets a lower layer reach the origin directly unless configured', async () => {
    const origin = await h.origin();
    const body = blob(1000);
    origin.objects.set('/f', { body });
    const deadParent = 'http://127.0.0.1:1';
    const isolated = await h.cache({ parents: [deadParent], upstreamIdleTimeoutMs: 2000 });
    const r = await fetchRaw(`${isolated.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${origin.url}/f` } });
    expect(r.status).toBe(502);
    expect(origin.requests).toHaveLength(0);
    const allowed = await h.cache({ parents: [deadParent], directOrigins: true });
    const ok = await fetchRaw(`${allowed.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${origin.url}/f` } });
    expect(ok.body.equals(body)).toBe(true);
  });

  it('stops a parent loop (a cache configured as its own parent) with 508 instead of hanging', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const self = await h.cache({ port, parents: [`http://127.0.0.1:${port}`] });
    const hash = sha256(blob(10));
    const r = await fetchRaw(`${self.url}/sha256/${hash}`, { headers: { 'x-origin-url': 'http://127.0.0.1:1/x' } });
    expect(r.status).toBe(502);
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: 'UPSTREAM_FAILED', message: expect.stringContaining('508') as unknown });
  });
});
