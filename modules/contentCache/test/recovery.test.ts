import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { open, readdir, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Harness, blob, fetchRaw, sha256 } from './fixtures.ts';

const h = new Harness();
afterEach(() => h.cleanup());

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const main = path.join(root, 'modules/contentCache/src/main.ts');

/** Runs the module entry point as the IoT Edge runtime would and waits for its "listening" log line. */
async function startModule(stateDir: string, extraEnv: Record<string, string> = {}): Promise<{ child: ChildProcess; url: string }> {
  // node with tsx as a loader (not the tsx CLI, which forks a second process a kill would orphan).
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', main], {
    cwd: root,
    env: { ...process.env, CACHE_STATE_DIR: stateDir, CACHE_PORT: '0', CACHE_BIND_ADDRESS: '127.0.0.1', CACHE_MIN_FREE: '0', ...extraEnv },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  h.onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const entry = JSON.parse(line) as { msg: string; port?: number };
    if (entry.msg === 'content cache listening') return { child, url: `http://127.0.0.1:${entry.port}` };
  }
  throw new Error('module exited before listening');
}

describe('restart after an unclean shutdown', () => {
  it('discards temp files and re-verifies published objects lazily before first use', async () => {
    const origin = await h.origin();
    const a = blob(300_000);
    const b = blob(300_000);
    origin.objects.set('/a', { body: a });
    origin.objects.set('/b', { body: b });
    const stateDir = await h.dir();
    const { child, url } = await startModule(stateDir);
    for (const [name, body] of [['a', a], ['b', b]] as const) {
      const r = await fetchRaw(`${url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${origin.url}/${name}` } });
      expect(r.body.equals(body)).toBe(true);
    }
    // Both objects published (fsync, rename, index row) before the power goes.
    for (let i = 0; i < 1000; i++) {
      const stats = JSON.parse((await fetchRaw(`${url}/stats`)).body.toString()) as { objects: number; fillsInFlight: number };
      if (stats.objects === 2 && stats.fillsInFlight === 0) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await once(child, 'exit');

    // What a crash mid-fill leaves behind, and a bit flipped on disk in a published object.
    await writeFile(path.join(stateDir, 'tmp', 'dead.part'), 'half an object');
    const fh = await open(path.join(stateDir, 'objects', sha256(b)), 'r+');
    await fh.write(Buffer.from([b[1000]! ^ 0x01]), 0, 1, 1000);
    await fh.close();

    const cache = await h.cache({ stateDir });
    expect(cache.store.recoveredFromCrash).toBe(true);
    expect(await readdir(path.join(stateDir, 'tmp'))).toEqual([]);
    expect(cache.store.lookup(sha256(a))?.verified).toBe(false);

    const hitA = await fetchRaw(`${cache.url}/sha256/${sha256(a)}`);
    expect(hitA.headers['x-cache']).toBe('HIT');
    expect(hitA.body.equals(a)).toBe(true);
    expect(cache.store.lookup(sha256(a))?.verified).toBe(true);

    // The corrupted copy is never served: it is dropped and filled again from its remembered source.
    const againB = await fetchRaw(`${cache.url}/sha256/${sha256(b)}`);
    expect(againB.headers['x-cache']).toBe('MISS');
    expect(againB.body.equals(b)).toBe(true);
    expect(cache.metrics.counters.hashMismatches).toBe(1);
    expect(origin.requestsFor('/b')).toHaveLength(2);
  });

  it('marks the index clean on SIGTERM so the next start trusts its objects', async () => {
    const origin = await h.origin();
    const a = blob(100_000);
    origin.objects.set('/a', { body: a });
    const stateDir = await h.dir();
    const { child, url } = await startModule(stateDir);
    await fetchRaw(`${url}/sha256/${sha256(a)}`, { headers: { 'x-origin-url': `${origin.url}/a` } });
    child.kill('SIGTERM');
    const [code] = (await once(child, 'exit')) as [number | null];
    expect(code).toBe(0);
    const cache = await h.cache({ stateDir });
    expect(cache.store.recoveredFromCrash).toBe(false);
    expect(cache.store.lookup(sha256(a))?.verified).toBe(true);
  });

  it('reads its parent from IOTEDGE_PARENTHOSTNAME and derives its upstream token from the shared secret', async () => {
    const origin = await h.origin();
    const a = blob(100_000);
    origin.objects.set('/a', { body: a });
    const parent = await h.cache({ childTokenSecret: 's3cret' });
    const { url } = await startModule(await h.dir(), {
      IOTEDGE_PARENTHOSTNAME: '127.0.0.1',
      CACHE_PARENT_PORT: String(parent.address()!.port),
      IOTEDGE_DEVICEID: 'line2-gateway',
      CACHE_TOKEN_SECRET: 's3cret',
    });
    const { deriveChildToken } = await import('../src/accessTokens.ts');
    const r = await fetchRaw(`${url}/sha256/${sha256(a)}`, {
      headers: { 'x-origin-url': `${origin.url}/a`, authorization: `Bearer ${deriveChildToken('s3cret', 'plc-1')}` },
    });
    expect(r.status).toBe(200);
    expect(r.body.equals(a)).toBe(true);
    expect(parent.metrics.counters.fillsStarted).toBe(1);
  });
});
