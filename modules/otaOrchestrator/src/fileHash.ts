import type { Hash } from 'node:crypto';
import { open } from 'node:fs/promises';

// Feeds a file (or its first `length` bytes) to a hash through one reused 1 MiB buffer: a stream would allocate a
// fresh buffer per read, and re-hashing a 1 GiB download that way costs about 30 MB of peak memory in garbage.

const chunkBytes = 1024 * 1024;

/** Returns how many bytes were hashed (less than `length` when the file is shorter). */
export async function hashFile(file: string, hash: Hash, length = Number.POSITIVE_INFINITY): Promise<number> {
  const handle = await open(file, 'r');
  const buffer = Buffer.allocUnsafe(chunkBytes);
  let total = 0;
  try {
    while (total < length) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, length - total), total);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      total += bytesRead;
    }
  } finally {
    await handle.close();
  }
  return total;
}
