import { afterEach, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { Harness, blob, curl, fetchRaw, multipartParts, sha256, settled } from './fixtures.ts';

const h = new Harness();
afterEach(() => h.cleanup());

async function setup(size = 1 << 20) {
  const origin = await h.origin();
  const body = blob(size);
  origin.objects.set('/a.bin', { body });
  const cache = await h.cache();
  const hash = sha256(body);
  const url = `${cache.url}/sha256/${hash}`;
  const from = { 'x-origin-url': `${origin.url}/a.bin` };
  return { origin, body, cache, hash, url, from };
}

describe('content-addressed GET /sha256/<hash>', () => {
  it('fills once from the origin header, then serves hits with a strong ETag', async () => {
    const { origin, body, cache, hash, url, from } = await setup();
    const miss = await fetchRaw(url, { headers: from });
    expect(miss.status).toBe(200);
    expect(miss.headers['x-cache']).toBe('MISS');
    expect(miss.body.equals(body)).toBe(true);
    await settled(cache);
    const hit = await fetchRaw(url);
    expect(hit.status).toBe(200);
    expect(hit.headers['x-cache']).toBe('HIT');
    expect(hit.headers.etag).toBe(`"${hash}"`);
    expect(hit.headers['accept-ranges']).toBe('bytes');
    expect(hit.body.equals(body)).toBe(true);
    expect(origin.requestsFor('/a.bin')).toHaveLength(1);
    // Published under its hash, byte for byte.
    expect((await readFile(cache.store.objectPath(hash))).equals(body)).toBe(true);
  });

  it('takes the origin from a query parameter and remembers it as a source', async () => {
    const { origin, body, hash, cache } = await setup();
    const r = await fetchRaw(`${cache.url}/sha256/${hash}?origin=${encodeURIComponent(`${origin.url}/a.bin`)}`);
    expect(r.body.equals(body)).toBe(true);
    expect(cache.store.sources(hash)).toEqual([`${origin.url}/a.bin`]);
  });

  it('answers If-None-Match with the hash as 304 without fetching anything', async () => {
    const { origin, hash, url, from } = await setup();
    const r = await fetchRaw(url, { headers: { ...from, 'if-none-match': `"${hash}"` } });
    expect(r.status).toBe(304);
    expect(origin.requests).toHaveLength(0);
  });

  it('answers 404 when no origin is known, 400 for a malformed hash or origin', async () => {
    const { cache, hash } = await setup();
    const none = await fetchRaw(`${cache.url}/sha256/${hash}`);
    expect(none.status).toBe(404);
    expect(JSON.parse(none.body.toString())).toMatchObject({ error: 'NO_SOURCE' });
    expect((await fetchRaw(`${cache.url}/sha256/${hash.toUpperCase()}`)).status).toBe(400);
    expect((await fetchRaw(`${cache.url}/sha256/abc`)).status).toBe(400);
    expect((await fetchRaw(`${cache.url}/sha256/${hash}`, { headers: { 'x-origin-url': 'file:///etc/passwd' } })).status).toBe(400);
  });

  it('serves single ranges, 416, overlapping ranges as 200, HEAD, If-None-Match and If-Range', async () => {
    const { body, hash, url, from, cache } = await setup();
    await fetchRaw(url, { headers: from });
    await settled(cache);
    const size = body.length;

    const one = await fetchRaw(url, { headers: { range: 'bytes=100-199' } });
    expect(one.status).toBe(206);
    expect(one.headers['content-range']).toBe(`bytes 100-199/${size}`);
    expect(one.headers['content-length']).toBe('100');
    expect(one.body.equals(body.subarray(100, 200))).toBe(true);

    const suffix = await fetchRaw(url, { headers: { range: 'bytes=-10' } });
    expect(suffix.headers['content-range']).toBe(`bytes ${size - 10}-${size - 1}/${size}`);
    expect(suffix.body.equals(body.subarray(size - 10))).toBe(true);

    const beyond = await fetchRaw(url, { headers: { range: `bytes=${size}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${size}`);

    const overlap = await fetchRaw(url, { headers: { range: 'bytes=0-10,5-20' } });
    expect(overlap.status).toBe(200);
    expect(overlap.body.length).toBe(size);

    const head = await fetchRaw(url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String(size));
    expect(head.body.length).toBe(0);

    const headRange = await fetchRaw(url, { method: 'HEAD', headers: { range: 'bytes=0-9' } });
    expect(headRange.status).toBe(206);
    expect(headRange.headers['content-length']).toBe('10');

    expect((await fetchRaw(url, { headers: { 'if-none-match': `"${hash}"` } })).status).toBe(304);
    expect((await fetchRaw(url, { headers: { 'if-none-match': '"other"' } })).status).toBe(200);

    const ifRange = await fetchRaw(url, { headers: { range: 'bytes=0-9', 'if-range': `"${hash}"` } });
    expect(ifRange.status).toBe(206);
    const staleIfRange = await fetchRaw(url, { headers: { range: 'bytes=0-9', 'if-range': '"stale"' } });
    expect(staleIfRange.status).toBe(200);
    expect(staleIfRange.body.length).toBe(size);
  });

  it('serves 64 ranges as multipart/byteranges with an exact Content-Length', async () => {
    const { body, url, from } = await setup();
    await fetchRaw(url, { headers: from });
    const ranges = Array.from({ length: 64 }, (_, i) => [i * 9000 + 7, i * 9000 + 7 + 100 + i] as const);
    const r = await fetchRaw(url, { headers: { range: `bytes=${ranges.map(([a, b]) => `${a}-${b}`).join(', ')}` } });
    expect(r.status).toBe(206);
    expect(r.cut).toBe(false);
    expect(Number(r.headers['content-length'])).toBe(r.body.length);
    const parts = multipartParts(r.body, r.headers['content-type']!);
    expect(parts).toHaveLength(64);
    parts.forEach((part, i) => {
      const [a, b] = ranges[i]!;
      expect(part.range).toBe(`${a}-${b}/${body.length}`);
      expect(part.data.equals(body.subarray(a, b + 1))).toBe(true);
    });
  });

  it('works for curl: plain, ranged, multi-range and conditional', async () => {
    const { body, hash, url, from } = await setup();
    const first = await curl(['-H', `x-origin-url: ${from['x-origin-url']}`, url]);
    expect(first.code).toBe(0);
    expect(first.stdout.equals(body)).toBe(true);
    const ranged = await curl(['-r', '1000-1999', url]);
    expect(ranged.stdout.equals(body.subarray(1000, 2000))).toBe(true);
    const multi = await curl(['-i', '-r', '0-9,100-109', url]);
    expect(multi.stdout.toString('latin1')).toMatch(/HTTP\/1\.1 206[\s\S]*multipart\/byteranges/);
    const notModified = await curl(['-o', '/dev/null', '-w', '%{http_code}', '-H', `If-None-Match: "${hash}"`, url]);
    expect(notModified.stdout.toString()).toBe('304');
    const unsatisfiable = await curl(['-o', '/dev/null', '-w', '%{http_code}', '-r', `${body.length + 5}-`, url]);
    expect(unsatisfiable.stdout.toString()).toBe('416');
  });

  it('serves ranges from an object that is still being filled, and holds the last byte until verified', async () => {
    const origin = await h.origin();
    const body = blob(3 << 20);
    origin.objects.set('/slow.bin', { body, holdAt: 1 << 20 });
    const cache = await h.cache();
    const url = `${cache.url}/sha256/${sha256(body)}`;
    const from = { 'x-origin-url': `${origin.url}/slow.bin` };
    const whole = fetchRaw(url, { headers: from });
    await origin.holding;
    // The fill is parked at 1 MiB: a range inside it is answered now.
    const early = await fetchRaw(url, { headers: { range: 'bytes=1000-4999' } });
    expect(early.status).toBe(206);
    expect(early.headers['x-cache']).toBe('MISS');
    expect(early.body.equals(body.subarray(1000, 5000))).toBe(true);
    const multi = fetchRaw(url, { headers: { range: `bytes=0-9,${2 << 20}-${(2 << 20) + 9}` } });
    const late = fetchRaw(url, { headers: { range: `bytes=${(3 << 20) - 100}-` } });
    let lateDone = false;
    void late.then(() => (lateDone = true));
    await new Promise((r) => setImmediate(r));
    expect(lateDone).toBe(false);
    origin.release();
    const lateResult = await late;
    expect(lateResult.status).toBe(206);
    expect(lateResult.body.equals(body.subarray(body.length - 100))).toBe(true);
    const multiResult = await multi;
    expect(multiResult.status).toBe(206);
    const parts = multipartParts(multiResult.body, multiResult.headers['content-type']!);
    expect(parts.map((p) => p.data)).toEqual([body.subarray(0, 10), body.subarray(2 << 20, (2 << 20) + 10)]);
    expect((await whole).body.equals(body)).toBe(true);
    expect(origin.requestsFor('/slow.bin')).toHaveLength(1);
  });

  it('rejects methods other than GET and HEAD', async () => {
    const { url } = await setup();
    const r = await fetchRaw(url, { method: 'POST' });
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET, HEAD');
  });
});
