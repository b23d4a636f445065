import { describe, expect, it } from 'vitest';
import { FileVerifier, isDetachedManifestPointer, parseDetachedManifest, signUpdateManifest, verifyUpdateManifest } from '../src/index.ts';
import type { UpdateFile } from '../src/index.ts';
import { expectCode, makeRoot, makeSigningKey, sha256b64, signedManifest, trustStoreFor } from './fixtures.ts';

const root = makeRoot('integrity.root');
const signer = makeSigningKey(root, 'ES256');

describe('file integrity against signed entries', () => {
  const data = Buffer.from('firmware image bytes');
  const file: UpdateFile = { filename: 'fw.bin', sizeInBytes: data.length, hashes: { sha256: sha256b64(data) } };

  it('accepts the signed bytes in any chunking', () => {
    const verifier = new FileVerifier(file);
    for (let i = 0; i < data.length; i += 3) verifier.update(data.subarray(i, i + 3));
    expect(() => verifier.finish()).not.toThrow();
  });

  it('refuses too many, too few and different bytes with the download codes', () => {
    expectCode(() => new FileVerifier(file).update(Buffer.concat([data, Buffer.from('!')])), 'DOWNLOAD_TOO_LONG');
    const short = new FileVerifier(file);
    short.update(data.subarray(1));
    expectCode(() => short.finish(), 'DOWNLOAD_TRUNCATED', /19 of the signed 20 bytes/);
    const altered = new FileVerifier(file);
    altered.update(Buffer.from(data).fill(0x41, 0, 1));
    expectCode(() => altered.finish(), 'DOWNLOAD_HASH_MISMATCH');
  });

  it('resolves a signed mini manifest (twin pointer) to its detached full manifest', () => {
    const full = signedManifest(signer);
    const pointer = {
      manifestVersion: '4',
      updateId: full.manifest.updateId,
      detachedManifestFileId: 'm0',
      files: { m0: { filename: 'contoso.toaster.updatemanifest.json', sizeInBytes: full.bytes.length, hashes: { sha256: sha256b64(full.bytes) } } },
    };
    const pointerBytes = Buffer.from(JSON.stringify(pointer));
    const verified = verifyUpdateManifest(pointerBytes, signUpdateManifest(pointerBytes, signer), trustStoreFor(root));
    expect(isDetachedManifestPointer(verified.manifest)).toBe(true);
    expect(parseDetachedManifest(verified.manifest, 'm0', full.bytes).updateId).toEqual(full.manifest.updateId);
    const tampered = Buffer.from(full.bytes);
    tampered[20]! ^= 1;
    expectCode(() => parseDetachedManifest(verified.manifest, 'm0', tampered), 'DOWNLOAD_HASH_MISMATCH');
    expectCode(() => parseDetachedManifest(verified.manifest, 'nope', full.bytes), 'MANIFEST_FILE_REFERENCE_INVALID');
    expectCode(() => parseDetachedManifest(verified.manifest, 'm0', pointerBytes), 'DOWNLOAD_TRUNCATED');
  });
});
