import { afterEach, describe, expect, it } from 'vitest';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Harness, blob, fetchRaw, sha256 } from './fixtures.ts';
import { ContentCacheAdmin } from '../src/adminClient.ts';

const h = new Harness();
afterEach(() => h.cleanup());

describe('admin API', () => {
  it('prefetches and pins objects, lists them, unpins, and reports stats and metrics', async () => {
    const origin = await h.origin();
    const a = blob(100_000);
    const b = blob(200_000);
    origin.objects.set('/a', { body: a });
    origin.objects.set('/b', { body: b });
    const cache = await h.cache({ adminToken: 't0k' });
    const admin = new ContentCacheAdmin({ baseUrl: cache.url, adminToken: 't0k' });
    const results = await admin.prefetch([
      { sha256: sha256(a), sources: [`${origin.url}/a`] },
      { sha256: sha256(b), sources: [`${origin.url}/b`], pin: false },
      { sha256: sha256(blob(10)), sources: [`${origin.url}/missing`] },
    ]);
    expect(results.map((r) => r.status)).toEqual(['fetched', 'fetched', 'failed']);
    expect((await admin.prefetch([{ sha256: sha256(a) }]))[0]!.status).toBe('present');

    const listed = await admin.list();
    const byHash = new Map(listed.objects.map((o) => [o.sha256, o]));
    expect(byHash.get(sha256(a))).toMatchObject({ size: a.length, pinned: true, verified: true, sources: [`${origin.url}/a`] });
    expect(byHash.get(sha256(b))?.pinned).toBe(false);

    expect(await admin.unpin([sha256(a), sha256(b)])).toBe(1);
    expect((await admin.list()).objects.every((o) => !o.pinned)).toBe(true);

    const hit = await fetchRaw(`${cache.url}/sha256/${sha256(a)}`);
    expect(hit.headers['x-cache']).toBe('HIT');
    const stats = await admin.stats();
    expect(stats).toMatchObject({ objects: 2, storedBytes: a.length + b.length });
    expect(stats.counters.hitBytes).toBe(a.length);
    expect(stats.counters.upstreamBytes).toBe(a.length + b.length);
    const metrics = (await fetchRaw(`${cache.url}/metrics`)).body.toString();
    expect(metrics).toContain(`content_cache_hit_bytes_total ${a.length}`);
    expect(metrics).toContain('content_cache_objects 2');
    expect(metrics).toMatch(/# TYPE content_cache_egress_bytes_total counter/);
  });

  it('starts a background prefetch with 202', async () => {
    const origin = await h.origin();
    const a = blob(50_000);
    origin.objects.set('/a', { body: a });
    const cache = await h.cache();
    const admin = new ContentCacheAdmin({ baseUrl: cache.url });
    expect(await admin.prefetchLater([{ sha256: sha256(a), sources: [`${origin.url}/a`] }])).toEqual([sha256(a)]);
    for (let i = 0; i < 400 && !cache.store.lookup(sha256(a)); i++) await new Promise((r) => setTimeout(r, 5));
    expect(cache.store.lookup(sha256(a))?.size).toBe(a.length);
  });

  it('imports USB bundle files only after checking their hash and only from the import roots', async () => {
    const usb = await h.dir();
    const outside = await h.dir();
    const good = blob(70_000);
    const bad = blob(70_000);
    await mkdir(path.join(usb, 'bundle'));
    await writeFile(path.join(usb, 'bundle', 'good.bin'), good);
    await writeFile(path.join(usb, 'bundle', 'bad.bin'), bad);
    await writeFile(path.join(outside, 'secret'), 'x');
    await symlink(path.join(outside, 'secret'), path.join(usb, 'bundle', 'escape'));
    const cache = await h.cache({ importRoots: [usb] });
    const admin = new ContentCacheAdmin({ baseUrl: cache.url });
    const results = await admin.importFiles([
      { path: path.join(usb, 'bundle', 'good.bin'), sha256: sha256(good) },
      { path: path.join(usb, 'bundle', 'bad.bin'), sha256: sha256(good) },
    ]);
    expect(results.map((r) => r.status)).toEqual(['imported', 'present']);
    const mismatch = await admin.importFiles([{ path: path.join(usb, 'bundle', 'bad.bin'), sha256: sha256(blob(5)) }]);
    expect(mismatch[0]!.status).toBe('mismatch');
    for (const p of [path.join(usb, 'bundle', 'escape'), path.join(usb, 'bundle', '..', '..', 'etc', 'passwd')]) {
      const r = await fetchRaw(`${cache.url}/admin/import`, { method: 'POST' }).catch(() => undefined);
      expect(r?.status).toBe(400);
      const res = await fetch(`${cache.url}/admin/import`, {
        method: 'POST',
        body: JSON.stringify({ files: [{ path: p, sha256: sha256(good) }] }),
      });
      expect(res.status).toBe(400);
    }
    const served = await fetchRaw(`${cache.url}/sha256/${sha256(good)}`);
    expect(served.headers['x-cache']).toBe('HIT');
    expect(served.body.equals(good)).toBe(true);
    expect((await admin.list()).pinned).toEqual([sha256(good)]);
  });

  it('accepts uploads that hash right and rejects those that do not', async () => {
    const cache = await h.cache();
    const admin = new ContentCacheAdmin({ baseUrl: cache.url });
    const data = blob(300_000);
    expect(await admin.upload(sha256(data), data)).toMatchObject({ status: 'imported', size: data.length });
    expect((await admin.upload(sha256(data), data)).status).toBe('present');
    const other = blob(1000);
    expect((await admin.upload(sha256(blob(1000)), other)).status).toBe('mismatch');
    expect(cache.store.list()).toHaveLength(1);
  });

  it('answers bad admin requests with 400 and unknown routes with 404', async () => {
    const cache = await h.cache();
    const post = (p: string, body: string) => fetch(`${cache.url}${p}`, { method: 'POST', body });
    expect((await post('/admin/prefetch', 'not json')).status).toBe(400);
    expect((await post('/admin/prefetch', JSON.stringify({ objects: [{ sha256: 'zz' }] }))).status).toBe(400);
    expect((await post('/admin/prefetch', JSON.stringify({ objects: [{ sha256: '0'.repeat(64), sources: ['ftp://x'] }] }))).status).toBe(400);
    expect((await post('/admin/unpin', JSON.stringify({}))).status).toBe(400);
    expect((await fetch(`${cache.url}/admin/nothing`)).status).toBe(404);
  });
});
