import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { OtaError } from '../errors.ts';
import { decodeAnyBase64 } from '../encoding.ts';
import type { FullUpdateManifest, UpdateFile } from '../manifest/types.ts';
import { isDetachedManifestPointer } from '../manifest/types.ts';
import { UpdateFileIds, childInlineSteps, parseChildManifest, referenceStepsOf } from '../manifest/childUpdates.ts';
import type { ReferenceStepOf } from '../manifest/childUpdates.ts';
import { verifyUpdateManifest } from '../signing/manifestVerifier.ts';
import type { VerifiedUpdateManifest } from '../signing/manifestVerifier.ts';
import type { ApplyResult, TrustStore } from '../signing/trustStore.ts';
import { parseRootKeyPackage } from '../signing/rootKeyPackage.ts';
import { ByteCursor } from './byteCursor.ts';
import { isZeroBlock, nextTarEntry, readPadded, skipPadding } from './tar.ts';
import { CHILDREN_FOLDER, CHILDREN_PREFIX, FILES_PREFIX, MANIFEST_ENTRY, MAX_METADATA_BYTES, ROOT_KEY_PACKAGE_ENTRY, SIGNATURE_ENTRY, childEntryName, payloadEntryName } from './layout.ts';

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
  /** Set for a child update's file: the reference step it belongs to. */
  child?: BundleFileChild;
  /** Set when extracting: `<extractTo>/<filename>`, or `<extractTo>/children/<childManifestFileId>/<filename>` for a child's file. */
  path?: string;
}

export interface BundleFileChild {
  /** The reference step's `detachedManifestFileId`: the parent's file id of the child's update manifest. */
  childManifestFileId: string;
  /** Position of the reference step in the parent's `instructions.steps`. */
  manifestStep: number;
}

export interface VerifiedBundle extends VerifiedUpdateManifest {
  manifest: FullUpdateManifest;
  signature: string;
  /**
   * What happened to the root key package the bundle carried, if any. 'applied' means the caller's trust store
   * now holds it (persist `rootKeyPackageJson`); nothing is applied when the bundle fails. 'older' is ignored.
   */
  rootKeyPackage?: { version: number; status: ApplyResult['status'] | 'older' };
  /** The parent's files, then each child update's (in bundle order). */
  files: BundleFile[];
}

/** A payload entry the reader expects, by entry name. */
interface ExpectedEntry {
  fileId: string;
  file: UpdateFile;
  child?: BundleFileChild;
  /** Set for the parent file that holds a child update's manifest. */
  childManifestFor?: ReferenceStepOf;
}

function refuse(code: 'BUNDLE_PATH_REFUSED' | 'BUNDLE_DUPLICATE_ENTRY' | 'BUNDLE_ORDER_INVALID', name: string, rule: string): never {
  throw new OtaError(code, `bundle entry ${JSON.stringify(name)}: ${rule}`, { field: name });
}

/**
 * Reads an offline bundle as a stream: verifies the manifest's signature chain (trying a newer root key package
 * the bundle carries on a copy of the trust store, committed only at the end), then checks every payload entry
 * against the signed size and sha256 while it passes through. A parent entry that a reference step names is, once
 * verified, read as the child update's manifest, and the child's files are then expected under
 * `children/<file id>/` and checked the same way. Memory use does not depend on the bundle's size. Refuses links
 * and other non-files, unexpected or duplicate names, path tricks, size disagreements, missing files, truncation
 * and data after the end marker.
 */
export async function readBundle(source: string | Readable | AsyncIterable<Buffer>, options: ReadBundleOptions): Promise<VerifiedBundle> {
  const stream = typeof source === 'string' ? createReadStream(source, { highWaterMark: 1024 * 1024 }) : source;
  const cursor = new ByteCursor(stream as AsyncIterable<Buffer>);
  const extracted: string[] = [];
  try {
    return await readEntries(cursor, options, extracted);
  } catch (error) {
    // Latest first: a child's files before the folders that were made for them.
    for (const created of extracted.reverse()) await rm(created, { force: true, recursive: true });
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
  const expected = new Map<string, ExpectedEntry>();
  /** Child manifests not verified yet, by the parent's file id. */
  const pendingChildren = new Map<string, ReferenceStepOf>();
  let fileIds: UpdateFileIds | undefined;
  let childFilesStarted = false;
  const files: BundleFile[] = [];
  let trustStore = options.trustStore;
  const progress = { bytesDone: 0, bytesTotal: 0 };

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
    const parent = result.manifest;
    for (const reference of referenceStepsOf(parent)) pendingChildren.set(reference.fileId, reference);
    if (pendingChildren.size > 0 && Object.values(parent.files).some((f) => f.filename === CHILDREN_FOLDER)) {
      refuse('BUNDLE_PATH_REFUSED', payloadEntryName(CHILDREN_FOLDER), `a parent file of an update with reference steps cannot be named "${CHILDREN_FOLDER}": the children's files are extracted there`);
    }
    fileIds = new UpdateFileIds(parent);
    for (const [fileId, file] of Object.entries(parent.files)) {
      const reference = pendingChildren.get(fileId);
      expected.set(payloadEntryName(file.filename), { fileId, file, ...(reference ? { childManifestFor: reference } : {}) });
    }
    progress.bytesTotal = Object.values(parent.files).reduce((sum, f) => sum + f.sizeInBytes, 0);
    return result;
  };

  /** After a child's manifest has verified: what the bundle must carry of it under `children/<file id>/`. */
  const expectChild = (reference: ReferenceStepOf, bytes: Buffer): void => {
    const child = parseChildManifest(verified!.manifest as FullUpdateManifest, reference, bytes);
    const added = fileIds!.addChild(child, reference);
    childInlineSteps(child, reference);
    for (const [fileId, file] of added) {
      expected.set(childEntryName(reference.fileId, file.filename), { fileId, file, child: { childManifestFileId: reference.fileId, manifestStep: reference.manifestStep } });
      progress.bytesTotal += file.sizeInBytes;
    }
    pendingChildren.delete(reference.fileId);
  };

  for (let header = await nextTarEntry(cursor); header; header = await nextTarEntry(cursor)) {
    const { name, size } = header;
    if (header.type !== 'file') {
      throw new OtaError('BUNDLE_ENTRY_TYPE_REFUSED', `bundle entry ${JSON.stringify(name)}: type '${header.typeflag}' is not a regular file`, { field: name });
    }
    checkEntryName(name);
    if (seen.has(name)) refuse('BUNDLE_DUPLICATE_ENTRY', name, 'appears more than once');
    seen.add(name);

    const isChildFile = name.startsWith(CHILDREN_PREFIX);
    if (!name.startsWith(FILES_PREFIX) && !isChildFile) {
      if (![MANIFEST_ENTRY, SIGNATURE_ENTRY, ROOT_KEY_PACKAGE_ENTRY].includes(name)) refuse('BUNDLE_PATH_REFUSED', name, 'is not a bundle entry name');
      if (verified) refuse('BUNDLE_ORDER_INVALID', name, 'metadata must precede payload files');
      if (size > MAX_METADATA_BYTES) throw new OtaError('BUNDLE_TOO_LARGE', `bundle entry ${name}: ${size} bytes exceeds ${MAX_METADATA_BYTES}`, { field: name });
      metadata.set(name, await readPadded(cursor, size));
      continue;
    }

    verified ??= establishTrust();
    if (isChildFile) childFilesStarted = true;
    else if (childFilesStarted) refuse('BUNDLE_ORDER_INVALID', name, "the parent's files must precede the child updates' files");
    const match = expected.get(name);
    if (!match) {
      const childManifestFileId = name.split('/')[1]!;
      if (isChildFile && pendingChildren.has(childManifestFileId)) {
        refuse('BUNDLE_ORDER_INVALID', name, `comes before the child update manifest it belongs to (${payloadEntryName(pendingChildren.get(childManifestFileId)!.childName)})`);
      }
      refuse('BUNDLE_PATH_REFUSED', name, isChildFile ? 'is not a file of a child update the signed manifest names' : 'is not a file the signed manifest declares');
    }
    const { fileId, file } = match;
    if (size !== file.sizeInBytes) {
      throw new OtaError('BUNDLE_SIZE_MISMATCH', `bundle entry ${JSON.stringify(name)}: ${size} bytes, the signed manifest says ${file.sizeInBytes}`, { field: name });
    }
    if (match.childManifestFor && size > MAX_METADATA_BYTES) {
      throw new OtaError('BUNDLE_TOO_LARGE', `bundle entry ${name}: child update manifest of ${size} bytes exceeds ${MAX_METADATA_BYTES}`, { field: name });
    }
    let target: string | undefined;
    if (options.extractTo) {
      const folder = match.child ? await childFolder(options.extractTo, match.child.childManifestFileId, extracted) : options.extractTo;
      target = path.join(folder, file.filename);
    }
    const kept: Buffer[] | undefined = match.childManifestFor ? [] : undefined;
    await copyPayload(cursor, name, file, target, extracted, (piece) => {
      kept?.push(piece);
      progress.bytesDone += piece.length;
      options.onProgress?.({ ...progress, filename: file.filename });
    });
    files.push({ fileId, filename: file.filename, sizeInBytes: size, sha256: file.hashes.sha256, ...(match.child ? { child: match.child } : {}), ...(target ? { path: target } : {}) });
    if (match.childManifestFor) expectChild(match.childManifestFor, Buffer.concat(kept!));
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

/**
 * `<extractTo>/children/<childManifestFileId>`, made on first use. Made, never reused: a folder that was there
 * already is refused like an existing file, so clean-up only ever removes what this read created.
 */
async function childFolder(extractTo: string, childManifestFileId: string, extracted: string[]): Promise<string> {
  const children = path.join(extractTo, CHILDREN_FOLDER);
  const folder = path.join(children, childManifestFileId);
  for (const dir of [children, folder]) {
    if (extracted.includes(dir)) continue;
    try {
      await mkdir(dir);
    } catch (error) {
      throw new OtaError('IO_ERROR', `extracting into ${dir}: ${(error as Error).message}`, { field: dir, cause: error });
    }
    extracted.push(dir);
  }
  return folder;
}

/** Streams one payload entry through sha256 (and into `target` when extracting), then checks it against the signed entry. */
async function copyPayload(cursor: ByteCursor, name: string, file: UpdateFile, target: string | undefined, extracted: string[], onPiece: (piece: Buffer) => void): Promise<void> {
  const size = file.sizeInBytes;
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
  try {
    while (remaining > 0) {
      const piece = await cursor.some(remaining);
      if (piece.length === 0) throw new OtaError('BUNDLE_TRUNCATED', `bundle entry ${JSON.stringify(name)}: ends ${remaining} bytes early`, { field: name });
      hash.update(piece);
      remaining -= piece.length;
      if (sink && !sink.write(piece)) await Promise.race([once(sink, 'drain'), once(sink, 'close')]).catch(() => undefined);
      checkSink();
      onPiece(piece);
    }
  } catch (error) {
    sink?.destroy(); // closes the file; the caller removes it
    throw error;
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
}

function checkEntryName(name: string): void {
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) refuse('BUNDLE_PATH_REFUSED', name, 'is an absolute path');
  if (name.includes('\\')) refuse('BUNDLE_PATH_REFUSED', name, 'contains a backslash');
  if (name.includes('\0')) refuse('BUNDLE_PATH_REFUSED', name, 'contains a NUL byte');
  const parts = name.split('/');
  if (parts.some((p) => p === '..' || p === '.' || p === '')) refuse('BUNDLE_PATH_REFUSED', name, 'has an empty, "." or ".." segment');
  const folder = `${parts[0]}/`;
  const allowed = parts.length === 1 || (parts.length === 2 && folder === FILES_PREFIX) || (parts.length === 3 && folder === CHILDREN_PREFIX);
  if (!allowed) refuse('BUNDLE_PATH_REFUSED', name, 'is nested where no directory is allowed');
}
