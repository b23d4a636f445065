import { afterAll, beforeAll, afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdir, open, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import http from 'node:http';
import { Harness, blob, fetchRaw, multipartParts, settled, sha256, tempDir, until } from './fixtures.ts';
import { ContentStore } from '../src/contentStore.ts';
import { SpaceKeeper } from '../src/spaceKeeper.ts';
import { silentLogger } from '../src/log.ts';

const run = promisify(execFile);

/** Writes until the filesystem refuses; a tmpfs is finite, so this ends. */
async function fillUp(file: string): Promise<void> {
  const fh = await open(file, 'w');
  const chunk = Buffer.alloc(64 << 10);
  try {
    for (;;) await fh.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await fh.close();
  }
}
const h = new Harness();
afterEach(() => h.cleanup());

describe('quota and eviction', () => {
  it('evicts least recently used unpinned objects between the watermarks', async () => {
    const origin = await h.origin();
    const cache = await h.cache({ quotaBytes: 1 << 20, highWatermark: 0.9, lowWatermark: 0.75, minFreeBytes: 0 });
    const objs = ['a', 'b', 'c', 'd'].map((name) => ({ name, body: blob(250_000) }));
    for (const o of objs) origin.objects.set(`/${o.name}`, { body: o.body });
    const get = async (o: { name: string; body: Buffer }) => {
      await fetchRaw(`${cache.url}/sha256/${sha256(o.body)}`, { headers: { 'x-origin-url': `${origin.url}/${o.name}` } });
      await settled(cache);
    };
    const [a, b, c, d] = objs as [(typeof objs)[0], (typeof objs)[0], (typeof objs)[0], (typeof objs)[0]];
    expect((await cache.prefetch(sha256(a.body), [`${origin.url}/a`], true)).status).toBe('fetched');
    await get(b);
    await get(c);
    await get(b); // b is now more recent than c
    await get(d); // 1,000,000 bytes > 90% of 1 MiB: evict down to 75%
    // Eviction runs right after the publish that crossed the high watermark, not inside the response.
    await until(() => cache.summary().counters.evictions > 0, 'an eviction');
    expect(cache.store.lookup(sha256(c.body))).toBeUndefined();
    for (const kept of [a, b, d]) expect(cache.store.lookup(sha256(kept.body))).toBeDefined();
    expect(cache.summary().counters.evictions).toBe(1);
    expect(await readdir(cache.store.objectsDir)).not.toContain(sha256(c.body));
  });

  it('never evicts pinned objects or objects being read', async () => {
    const dir = await h.dir();
    const store = new ContentStore(dir);
    h.onCleanup(() => Promise.resolve(store.close()));
    const hashes: string[] = [];
    for (let i = 0; i < 3; i++) {
      const body = blob(1000);
      const tmp = store.newTempPath();
      await writeFile(tmp, body);
      await store.publish(tmp, sha256(body), body.length, 'application/octet-stream');
      hashes.push(sha256(body));
    }
    const [pinned, busy, idle] = hashes as [string, string, string];
    store.pin(pinned);
    const keeper = new SpaceKeeper(store, { quotaBytes: 2000, highWatermark: 0.5, lowWatermark: 0, minFreeBytes: 0 }, (s) => s === busy, silentLogger);
    await keeper.afterPublish();
    expect(store.list().map((o) => o.sha256).sort()).toEqual([pinned, busy].sort());
    expect(store.lookup(idle)).toBeUndefined();
  });

  it('passes an object larger than the quota through to the client without storing it', async () => {
    const origin = await h.origin();
    const body = blob(2 << 20);
    origin.objects.set('/big', { body });
    const cache = await h.cache({ quotaBytes: 1 << 20, minFreeBytes: 0 });
    const r = await fetchRaw(`${cache.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${origin.url}/big` } });
    expect(r.cut).toBe(false);
    expect(r.body.equals(body)).toBe(true);
    await settled(cache);
    expect(cache.store.list()).toHaveLength(0);
    expect(cache.metrics.counters.passThroughFills).toBe(1);
  });
});

describe('full disk (real tmpfs)', () => {
  let mountPoint: string | undefined;
  let skipReason = '';
  let cleanupDir: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    const t = await tempDir('cc-tmpfs-');
    cleanupDir = () => t.remove();
    try {
      await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', t.dir]);
      mountPoint = t.dir;
    } catch (err) {
      skipReason = `cannot mount a tmpfs (needs root): ${(err as Error).message.split('\n')[0]}`;
    }
  });

  afterAll(async () => {
    if (mountPoint) await run('umount', [mountPoint]);
    await cleanupDir?.();
  });

  async function freshState(name: string): Promise<string> {
    const dir = path.join(mountPoint!, name);
    await mkdir(dir);
    h.onCleanup(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  it('on ENOSPC mid-write drops the temp file and keeps serving the client as pass-through', async (ctx) => {
    if (!mountPoint) return ctx.skip(skipReason);
    const origin = await h.origin();
    const body = blob(6 << 20);
    origin.objects.set('/img', { body, holdAt: 1 << 20 });
    const stateDir = await freshState('enospc');
    const cache = await h.cache({ stateDir, minFreeBytes: 0 });
    const hash = sha256(body);
    const from = { 'x-origin-url': `${origin.url}/img` };
    const pending = fetchRaw(`${cache.url}/sha256/${hash}`, { headers: from });
    const agent = new http.Agent({ maxSockets: 4 });
    const others = [
      fetchRaw(`${cache.url}/sha256/${hash}`, { headers: from, agent }),
      fetchRaw(`${cache.url}/sha256/${hash}`, { headers: { ...from, range: `bytes=1000-${(3 << 20) - 1}` }, agent }),
      fetchRaw(`${cache.url}/sha256/${hash}`, { headers: { ...from, range: `bytes=0-99,${5 << 20}-${(5 << 20) + 99}` }, agent }),
    ];
    await origin.holding;
    await until(() => cache.metrics.counters.missRequests === 4, 'all clients to join the fill');
    // Someone else fills the disk while the object is on its way.
    const filler = path.join(mountPoint, 'filler');
    h.onCleanup(() => rm(filler, { force: true }));
    await fillUp(filler);
    expect((await statfs(mountPoint)).bavail).toBe(0);
    origin.release();
    const r = await pending;
    expect(r.cut).toBe(false);
    expect(r.body.equals(body)).toBe(true);
    // Followers behind, at and beyond the point where the disk filled all get their bytes.
    const [full, ranged, multi] = await Promise.all(others);
    agent.destroy();
    expect(full!.body.equals(body)).toBe(true);
    expect(ranged!.body.equals(body.subarray(1000, 3 << 20))).toBe(true);
    expect(multipartParts(multi!.body, multi!.headers['content-type']!).map((p) => p.data)).toEqual([
      body.subarray(0, 100),
      body.subarray(5 << 20, (5 << 20) + 100),
    ]);
    await settled(cache);
    expect(cache.metrics.counters.passThroughFills).toBe(1);
    expect(cache.metrics.counters.fillsStarted).toBe(1);
    expect(cache.store.lookup(hash)).toBeUndefined();
    expect(await readdir(cache.store.tempDir)).toEqual([]);
    expect(await readdir(cache.store.objectsDir)).toEqual([]);
  });

  it('checks free space before filling and passes through what cannot fit', async (ctx) => {
    if (!mountPoint) return ctx.skip(skipReason);
    const origin = await h.origin();
    const body = blob(12 << 20);
    origin.objects.set('/huge', { body });
    const cache = await h.cache({ stateDir: await freshState('statfs'), minFreeBytes: 0 });
    const r = await fetchRaw(`${cache.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${origin.url}/huge` } });
    expect(r.cut).toBe(false);
    expect(r.body.equals(body)).toBe(true);
    await settled(cache);
    expect(cache.metrics.counters.passThroughFills).toBe(1);
    expect(await readdir(cache.store.tempDir)).toEqual([]);
    // Once there is room again, the next request stores it (here: a smaller object).
    const small = blob(1 << 20);
    origin.objects.set('/small', { body: small });
    await fetchRaw(`${cache.url}/sha256/${sha256(small)}`, { headers: { 'x-origin-url': `${origin.url}/small` } });
    await settled(cache);
    expect(cache.store.lookup(sha256(small))?.size).toBe(small.length);
  });
});
