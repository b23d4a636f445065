import { createHash, timingSafeEqual } from 'node:crypto';
import { OtaError } from '../errors.ts';
import { decodeAnyBase64 } from '../encoding.ts';
import { parseUpdateManifest } from './updateManifest.ts';
import type { FullUpdateManifest, UpdateFile, UpdateManifest } from './types.ts';
import { isDetachedManifestPointer } from './types.ts';

/**
 * Checks bytes against a signed file entry as they arrive (a download, a cache fill): more bytes than
 * `sizeInBytes` fail at once, fewer or different ones at `finish()`. Codes are the download ones.
 */
export class FileVerifier {
  readonly file: UpdateFile;
  #hash = createHash('sha256');
  #received = 0;

  constructor(file: UpdateFile) {
    this.file = file;
  }

  get receivedBytes(): number {
    return this.#received;
  }

  update(chunk: Uint8Array): void {
    this.#received += chunk.length;
    if (this.#received > this.file.sizeInBytes) {
      throw new OtaError('DOWNLOAD_TOO_LONG', `${this.file.filename}: more than the signed ${this.file.sizeInBytes} bytes arrived`, { field: this.file.filename });
    }
    this.#hash.update(chunk);
  }

  finish(): void {
    if (this.#received < this.file.sizeInBytes) {
      throw new OtaError('DOWNLOAD_TRUNCATED', `${this.file.filename}: ${this.#received} of the signed ${this.file.sizeInBytes} bytes arrived`, { field: this.file.filename });
    }
    const expected = decodeAnyBase64(this.file.hashes.sha256);
    const actual = this.#hash.digest();
    if (!expected || expected.length !== actual.length || !timingSafeEqual(expected, actual)) {
      throw new OtaError('DOWNLOAD_HASH_MISMATCH', `${this.file.filename}: content does not match the signed sha256`, { field: this.file.filename });
    }
  }
}

/**
 * The full manifest a signed manifest points at (a mini manifest's detachedManifestFileId, or a reference
 * step's): trusted because its bytes match the signed entry, then parsed. It must be a full manifest.
 */
export function parseDetachedManifest(parent: UpdateManifest, fileId: string, bytes: Uint8Array): FullUpdateManifest {
  const file = parent.files[fileId];
  if (!file) {
    throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `detached manifest: file id ${JSON.stringify(fileId)} is not in /files`, { field: `/files/${fileId}` });
  }
  const verifier = new FileVerifier(file);
  verifier.update(bytes);
  verifier.finish();
  const manifest = parseUpdateManifest(bytes);
  if (isDetachedManifestPointer(manifest)) {
    throw new OtaError('UPDATE_MANIFEST_INVALID', `detached manifest ${file.filename}: is itself a pointer; one level of indirection is allowed`, { field: '/' });
  }
  return manifest;
}
