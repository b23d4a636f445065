import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hashFile } from '../src/fileHash.ts';

describe('hashFile', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'file-hash-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  // Over two of its 1 MiB reads, not a multiple of them.
  const bytes = randomBytes(2 * 1024 * 1024 + 12_345);
  const file = path.join(dir, 'blob.bin');
  writeFileSync(file, bytes);
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

  it('hashes the whole file and says how much it read', async () => {
    const hash = createHash('sha256');
    expect(await hashFile(file, hash)).toBe(bytes.length);
    expect(hash.digest('hex')).toBe(sha(bytes));
  });

  it('hashes only a prefix when given a length, and stops at the end of a shorter file', async () => {
    const prefix = createHash('sha256');
    expect(await hashFile(file, prefix, 1_500_000)).toBe(1_500_000);
    expect(prefix.digest('hex')).toBe(sha(bytes.subarray(0, 1_500_000)));
    const beyond = createHash('sha256');
    expect(await hashFile(file, beyond, bytes.length + 10)).toBe(bytes.length);
    expect(beyond.digest('hex')).toBe(sha(bytes));
  });

  it('fails on a missing file', async () => {
    await expect(hashFile(path.join(dir, 'absent'), createHash('sha256'))).rejects.toThrow(/ENOENT/);
  });
});
