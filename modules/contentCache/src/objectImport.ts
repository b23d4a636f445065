// Local files (USB bundle) and uploaded bodies go through one check: hash while writing, publish only on a match.
import { open, unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { ContentStore } from './contentStore.ts';
import type { SpaceKeeper } from './spaceKeeper.ts';
import type { CacheMetrics } from './cacheMetrics.ts';
import type { IngestOutcome } from './adminApi.ts';

export interface IngestDeps {
  store: ContentStore;
  space: SpaceKeeper;
  metrics: CacheMetrics;
  ensureVerified: (sha256: string) => Promise<boolean>;
}

export async function ingestObject(deps: IngestDeps, sha256: string, body: AsyncIterable<Buffer>, pin: boolean): Promise<IngestOutcome> {
  const { store, space, metrics } = deps;
  if (store.lookup(sha256) && (await deps.ensureVerified(sha256))) {
    for await (const _ of body) {
      // Drain so the uploader is not left hanging.
    }
    if (pin) store.pin(sha256);
    return { sha256, status: 'present' };
  }
  const temp = store.newTempPath();
  const fh = await open(temp, 'w');
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of body) {
      hash.update(chunk);
      await fh.write(chunk);
      size += chunk.length;
    }
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(temp).catch(() => undefined);
    return { sha256, status: 'error', error: (err as Error).message };
  }
  await fh.close();
  const digest = hash.digest('hex');
  if (digest !== sha256) {
    await unlink(temp).catch(() => undefined);
    metrics.counters.hashMismatches++;
    return { sha256, status: 'mismatch', error: `content hashes to ${digest}` };
  }
  await store.publish(temp, sha256, size, 'application/octet-stream');
  // Pinned only once the bytes are known good, so a bad import leaves no pin behind.
  if (pin) store.pin(sha256);
  await space.afterPublish();
  return { sha256, status: 'imported', size };
}
