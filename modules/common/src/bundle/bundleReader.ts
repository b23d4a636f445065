import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { OtaError } from '../errors.ts';
import { decodeAnyBase64 } from '../encoding.ts';
import type { FullUpdateManifest, UpdateFile } from '../manifest/types.ts';
import { isDetachedManifestPointer } from '../manifest/types.ts';
import { verifyUpdateManifest } from '../signing/manifestVerifier.ts';
import type { VerifiedUpdateManifest } from '../signing/manifestVerifier.ts';
import type { ApplyResult, TrustStore } from '../signing/trustStore.ts';
import { parseRootKeyPackage } from '../signing/rootKeyPackage.ts';
import { ByteCursor } from './byteCursor.ts';
import { isZeroBlock, nextTarEntry, readPadded, skipPadding } from './tar.ts';
import { FILES_PREFIX, MANIFEST_ENTRY, MAX_METADATA_BYTES, ROOT_KEY_PACKAGE_ENTRY, SIGNATURE_ENTRY } from './layout.ts';

export interface ReadBundleOptions {
  trustStore: TrustStore;
  /** Extract verified payload files into this (existing) directory; files are removed again if the bundle fails. */
  extractTo?: string;
  onProgress?: (p: { bytesDone: number; bytesTotal: number; filename: string }) => void;
}

export interface BundleFile {
  fileId: string;
  filename: string;
  sizeInBytes: number;
  sha256: string;
  /** Set when extracting. */
  path?: string;
}

export interface VerifiedBundle extends VerifiedUpdateManifest {
  manifest: FullUpdateManifest;
  signature: string;
  /**
   * What happened to the root key package the bundle carried, if any. 'applied' means the caller's trust store
   * now holds it (persist `rootKeyPackageJson`); nothing is applied when the bundle fails. 'older' is ignored.
   */
  rootKeyPackage?: { version: number; status: ApplyResult['status'] | 'older' };
  files: BundleFile[];
}

function refuse(code: 'BUNDLE_PATH_REFUSED' | 'BUNDLE_DUPLICATE_ENTRY' | 'BUNDLE_ORDER_INVALID', name: string, rule: string): never {
  throw new OtaError(code, `bundle entry ${JSON.stringify(name)}: ${rule}`, { field: name });
}

/**
 * Reads an offline bundle as a stream: verifies the manifest's signature chain (trying a newer root key package
 * the bundle carries on a copy of the trust store, committed only at the end), then checks every payload entry against the signed size and sha256 while it passes
 * through. Memory use does not depend on the bundle's size. Refuses links and other non-files, unexpected or
 * duplicate names, path tricks, size disagreements, missing files, truncation and data after the end marker.
 */
export async function readBundle(source: string | Readable | AsyncIterable<Buffer>, options: ReadBundleOptions): Promise<VerifiedBundle> {
  const stream = typeof source === 'string' ? createReadStream(source, { highWaterMark: 1024 * 1024 }) : source;
  const cursor = new ByteCursor(stream as AsyncIterable<Buffer>);
  const extracted: string[] = [];
  try {
    return await readEntries(cursor, options, extracted);
  } catch (error) {
    await Promise.all(extracted.map((p) => rm(p, { force: true })));
    throw error;
  } finally {
    if (typeof source === 'string') (stream as Readable).destroy();
  }
}

async function readEntries(cursor: ByteCursor, options: ReadBundleOptions, extracted: string[]): Promise<VerifiedBundle> {
  const metadata = new Map<string, Buffer>();
  const seen = new Set<string>();
  let verified: VerifiedUpdateManifest | undefined;
  let rootKeyPackage: VerifiedBundle['rootKeyPackage'];
  let expected = new Map<string, [string, UpdateFile]>();
  const files: BundleFile[] = [];
  let trustStore = options.trustStore;
  let bytesDone = 0;
  let bytesTotal = 0;

  const establishTrust = (): VerifiedUpdateManifest => {
    const manifest = metadata.get(MANIFEST_ENTRY);
    const signature = metadata.get(SIGNATURE_ENTRY);
    if (!manifest || !signature) {
      return refuse('BUNDLE_ORDER_INVALID', FILES_PREFIX, `${MANIFEST_ENTRY} and ${SIGNATURE_ENTRY} must precede payload files`);
    }
    const packageBytes = metadata.get(ROOT_KEY_PACKAGE_ENTRY);
    if (packageBytes) {
      const pkg = parseRootKeyPackage(packageBytes);
      // An older package in a bundle is not an attack on a device that moved on: ignore it, never apply it.
      // A newer one is tried on a copy and only committed once the whole bundle has verified.
      if (pkg.protected.version < options.trustStore.rootKeyPackageVersion) {
        rootKeyPackage = { version: pkg.protected.version, status: 'older' };
      } else {
        trustStore = options.trustStore.clone();
        rootKeyPackage = trustStore.applyRootKeyPackage(packageBytes);
      }
    }
    const result = verifyUpdateManifest(manifest, signature.toString('utf8'), trustStore);
    if (isDetachedManifestPointer(result.manifest)) {
      throw new OtaError('UPDATE_MANIFEST_INVALID', 'bundle: carries a detached-manifest pointer, a bundle needs the full manifest', { field: '/' });
    }
    expected = new Map(Object.entries(result.manifest.files).map(([id, file]) => [`${FILES_PREFIX}${file.filename}`, [id, file]]));
    bytesTotal = Object.values(result.manifest.files).reduce((sum, f) => sum + f.sizeInBytes, 0);
    return result;
  };

  for (let header = await nextTarEntry(cursor); header; header = await nextTarEntry(cursor)) {
    const { name, size } = header;
    if (header.type !== 'file') {
      throw new OtaError('BUNDLE_ENTRY_TYPE_REFUSED', `bundle entry ${JSON.stringify(name)}: type '${header.typeflag}' is not a regular file`, { field: name });
    }
    checkEntryName(name);
    if (seen.has(name)) refuse('BUNDLE_DUPLICATE_ENTRY', name, 'appears more than once');
    seen.add(name);

    if (!name.startsWith(FILES_PREFIX)) {
      if (![MANIFEST_ENTRY, SIGNATURE_ENTRY, ROOT_KEY_PACKAGE_ENTRY].includes(name)) refuse('BUNDLE_PATH_REFUSED', name, 'is not a bundle entry name');
      if (verified) refuse('BUNDLE_ORDER_INVALID', name, 'metadata must precede payload files');
      if (size > MAX_METADATA_BYTES) throw new OtaError('BUNDLE_TOO_LARGE', `bundle entry ${name}: ${size} bytes exceeds ${MAX_METADATA_BYTES}`, { field: name });
      metadata.set(name, await readPadded(cursor, size));
      continue;
    }

    verified ??= establishTrust();
    const match = expected.get(name);
    if (!match) refuse('BUNDLE_PATH_REFUSED', name, 'is not a file the signed manifest declares');
    const [fileId, file] = match;
    if (size !== file.sizeInBytes) {
      throw new OtaError('BUNDLE_SIZE_MISMATCH', `bundle entry ${JSON.stringify(name)}: ${size} bytes, the signed manifest says ${file.sizeInBytes}`, { field: name });
    }
    const target = options.extractTo ? path.join(options.extractTo, file.filename) : undefined;
    let sink: WriteStream | undefined;
    let sinkError: Error | undefined;
    const checkSink = (): void => {
      if (!sinkError) return;
      const full = (sinkError as NodeJS.ErrnoException).code === 'ENOSPC';
      throw new OtaError(full ? 'DOWNLOAD_DISK_FULL' : 'IO_ERROR', `extracting ${file.filename}: ${sinkError.message}`, { field: name, cause: sinkError });
    };
    if (target) {
      // Opened before it is recorded for clean-up, so a file that was already there is never deleted.
      const handle = await open(target, 'wx', 0o644).catch((error: Error) => {
        sinkError = error;
        return undefined;
      });
      checkSink();
      extracted.push(target);
      sink = handle!.createWriteStream();
      sink.on('error', (error) => (sinkError = error));
    }
    const hash = createHash('sha256');
    let remaining = size;
    while (remaining > 0) {
      const piece = await cursor.some(remaining);
      if (piece.length === 0) throw new OtaError('BUNDLE_TRUNCATED', `bundle entry ${JSON.stringify(name)}: ends ${remaining} bytes early`, { field: name });
      hash.update(piece);
      remaining -= piece.length;
      bytesDone += piece.length;
      if (sink && !sink.write(piece)) await Promise.race([once(sink, 'drain'), once(sink, 'close')]).catch(() => undefined);
      checkSink();
      options.onProgress?.({ bytesDone, bytesTotal, filename: file.filename });
    }
    if (sink) {
      sink.end();
      if (!sink.closed) await once(sink, 'close').catch(() => undefined);
      checkSink();
    }
    await skipPadding(cursor, size);
    if (!hash.digest().equals(decodeAnyBase64(file.hashes.sha256)!)) {
      throw new OtaError('BUNDLE_HASH_MISMATCH', `bundle entry ${JSON.stringify(name)}: content does not match the signed sha256`, { field: name });
    }
    files.push({ fileId, filename: file.filename, sizeInBytes: size, sha256: file.hashes.sha256, ...(target ? { path: target } : {}) });
  }

  // Anything after the marker must be zero padding (tar writers round up to a record size).
  for (let piece = await cursor.some(1024 * 1024); piece.length > 0; piece = await cursor.some(1024 * 1024)) {
    if (!isZeroBlock(piece)) throw new OtaError('BUNDLE_TRAILING_DATA', 'bundle: non-zero data after the end-of-archive marker');
  }
  verified ??= establishTrust();
  for (const [name] of expected) {
    if (!seen.has(name)) throw new OtaError('BUNDLE_FILE_MISSING', `bundle: ${JSON.stringify(name)} declared by the signed manifest is missing`, { field: name });
  }
  if (rootKeyPackage?.status === 'applied') options.trustStore.applyRootKeyPackage(metadata.get(ROOT_KEY_PACKAGE_ENTRY)!);
  return {
    ...verified,
    manifest: verified.manifest as FullUpdateManifest,
    signature: metadata.get(SIGNATURE_ENTRY)!.toString('utf8'),
    ...(rootKeyPackage ? { rootKeyPackage } : {}),
    files,
  };
}

function checkEntryName(name: string): void {
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) refuse('BUNDLE_PATH_REFUSED', name, 'is an absolute path');
  if (name.includes('\\')) refuse('BUNDLE_PATH_REFUSED', name, 'contains a backslash');
  if (name.includes('\0')) refuse('BUNDLE_PATH_REFUSED', name, 'contains a NUL byte');
  const parts = name.split('/');
  if (parts.some((p) => p === '..' || p === '.' || p === '')) refuse('BUNDLE_PATH_REFUSED', name, 'has an empty, "." or ".." segment');
  if (parts.length > 2 || (parts.length === 2 && `${parts[0]}/` !== FILES_PREFIX)) refuse('BUNDLE_PATH_REFUSED', name, 'is nested where no directory is allowed');
}
