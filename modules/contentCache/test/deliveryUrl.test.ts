import { afterEach, describe, expect, it } from 'vitest';
import { Harness, blob, curl, fetchRaw, sha256, settled } from './fixtures.ts';

const h = new Harness();
afterEach(() => h.cleanup());

async function setup() {
  const origin = await h.origin();
  const body = blob(500_000);
  origin.objects.set('/filestreamingservice/files/abc/pkg.cab', { body });
  const cache = await h.cache({ originHosts: [origin.host] });
  const path = '/filestreamingservice/files/abc/pkg.cab';
  const at = (query: string) => `${cache.url}${path}?cacheHostOrigin=${origin.host}${query}`;
  return { origin, body, cache, path, at };
}

describe('Delivery Optimization URL mode', () => {
  it('fetches from the allowed origin without cacheHostOrigin and keys the object without SAS/S3 signatures', async () => {
    const { origin, body, path, at, cache } = await setup();
    const first = await fetchRaw(at('&sv=2024-01-01&se=2030-01-01&sig=AAA&sp=r'));
    await settled(cache);
    expect(first.status).toBe(200);
    expect(first.headers['x-cache']).toBe('MISS');
    expect(first.body.equals(body)).toBe(true);
    const seen = origin.requestsFor(path);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.path).toBe(`${path}?sv=2024-01-01&se=2030-01-01&sig=AAA&sp=r`);

    const again = await fetchRaw(at('&sv=2024-01-01&se=2031-06-01&sig=BBB&sp=r'));
    expect(again.headers['x-cache']).toBe('HIT');
    expect(again.body.equals(body)).toBe(true);
    const s3 = await fetchRaw(at('&X-Amz-Signature=ff&X-Amz-Expires=60&X-Amz-Date=20260101T000000Z'));
    expect(s3.headers['x-cache']).toBe('HIT');
    expect(origin.requestsFor(path)).toHaveLength(1);

    // A parameter that names different content is part of the key.
    await fetchRaw(at('&version=2'));
    expect(origin.requestsFor(path)).toHaveLength(2);
  });

  it('serves ranges the way DO clients ask for them, via curl too', async () => {
    const { body, at, cache } = await setup();
    await fetchRaw(at(''));
    await settled(cache);
    const r = await curl(['-r', '65536-131071', at('')]);
    expect(r.stdout.equals(body.subarray(65536, 131072))).toBe(true);
    const hit = await fetchRaw(at(''), { headers: { range: 'bytes=0-0' } });
    expect(hit.status).toBe(206);
    expect(hit.headers.etag).toMatch(/^"[0-9a-f]{64}"$/);
  });

  it('refuses hosts that are not configured, so the cache is not an open proxy', async () => {
    const { origin, cache, path } = await setup();
    const r = await fetchRaw(`${cache.url}${path}?cacheHostOrigin=example.com`);
    expect(r.status).toBe(403);
    const userinfo = await fetchRaw(`${cache.url}${path}?cacheHostOrigin=${encodeURIComponent(`evil@${origin.host}`)}`);
    expect(userinfo.status).toBe(400);
    const twice = await fetchRaw(`${cache.url}${path}?cacheHostOrigin=${origin.host}&cacheHostOrigin=example.com`);
    expect(twice.status).toBe(400);
    expect(origin.requests).toHaveLength(0);
  });

  it('goes through a three-level chain with one fetch per level', async () => {
    const origin = await h.origin();
    const body = blob(400_000);
    origin.objects.set('/d/x.bin', { body });
    const hosts = [origin.host];
    const top = await h.cache({ originHosts: hosts });
    const mid = await h.cache({ originHosts: hosts, parents: [top.url] });
    const leaf = await h.cache({ originHosts: hosts, parents: [mid.url] });
    const results = await Promise.all(
      Array.from({ length: 10 }, () => fetchRaw(`${leaf.url}/d/x.bin?cacheHostOrigin=${origin.host}&sig=zz`)),
    );
    for (const r of results) expect(r.body.equals(body)).toBe(true);
    expect(origin.requestsFor('/d/x.bin')).toHaveLength(1);
    for (const c of [top, mid, leaf]) expect(c.metrics.counters.upstreamRequests).toBe(1);
  });

  it('checks URL-mode bytes against the hash a parent cache puts in its ETag', async () => {
    const liar = await h.origin();
    const good = blob(200_000);
    // A "parent" that claims the hash of the good bytes but sends others.
    liar.objects.set('/d/y.bin', { body: good, corrupt: true, etag: `"${sha256(good)}"` });
    const child = await h.cache({ originHosts: ['origin.example'], parents: [liar.url] });
    const r = await fetchRaw(`${child.url}/d/y.bin?cacheHostOrigin=origin.example`);
    expect(r.cut).toBe(true);
    await settled(child);
    expect(child.metrics.counters.hashMismatches).toBe(1);
    expect(child.store.list()).toHaveLength(0);
    expect(liar.requestsFor('/d/y.bin')[0]!.path).toBe('/d/y.bin?cacheHostOrigin=origin.example');
  });

  it('publishes a JSON summary for children at /stats', async () => {
    const { cache, at } = await setup();
    await fetchRaw(at(''));
    await settled(cache);
    const stats = JSON.parse((await fetchRaw(`${cache.url}/stats`)).body.toString()) as { objects: number; counters: { missRequests: number } };
    expect(stats.objects).toBe(1);
    expect(stats.counters.missRequests).toBe(1);
  });

  it('resumes a URL-mode fill with Range and If-Range when the origin dies mid-stream', async () => {
    const origin = await h.origin();
    const body = blob(2 << 20);
    origin.objects.set('/r.bin', { body, etag: '"e1"', dieAfter: 600_000, next: { body, etag: '"e1"' } });
    const cache = await h.cache({ originHosts: [origin.host] });
    const r = await fetchRaw(`${cache.url}/r.bin?cacheHostOrigin=${origin.host}`);
    expect(r.cut).toBe(false);
    expect(r.body.equals(body)).toBe(true);
    const resume = origin.requestsFor('/r.bin')[1]!;
    expect(resume.headers.range).toMatch(/^bytes=\d+-$/);
    expect(resume.headers['if-range']).toBe('"e1"');
  });

  it('cuts clients rather than splice two versions when the object changed upstream mid-fill', async () => {
    const origin = await h.origin();
    const v1 = blob(2 << 20);
    const v2 = blob(2 << 20);
    origin.objects.set('/c.bin', { body: v1, etag: '"v1"', dieAfter: 600_000, next: { body: v2, etag: '"v2"' } });
    const cache = await h.cache({ originHosts: [origin.host] });
    const r = await fetchRaw(`${cache.url}/c.bin?cacheHostOrigin=${origin.host}`);
    expect(r.cut).toBe(true);
    await settled(cache);
    expect(cache.store.list()).toHaveLength(0);
    // The next request starts afresh and gets the new version whole.
    const again = await fetchRaw(`${cache.url}/c.bin?cacheHostOrigin=${origin.host}`);
    expect(again.body.equals(v2)).toBe(true);
  });
});
