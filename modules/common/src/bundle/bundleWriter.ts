import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { readFile, rename, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { OtaError } from '../errors.ts';
import { decodeAnyBase64 } from '../encoding.ts';
import { isDetachedManifestPointer } from '../manifest/types.ts';
import type { FullUpdateManifest, UpdateFile } from '../manifest/types.ts';
import { UpdateFileIds, childInlineSteps, parseChildManifest, referenceStepsOf } from '../manifest/childUpdates.ts';
import { dateTimeMillis } from '../manifest/rules.ts';
import { parseUpdateManifest } from '../manifest/updateManifest.ts';
import { parseRootKeyPackage } from '../signing/rootKeyPackage.ts';
import { BLOCK, encodePaxPath, encodeTarHeader, paddingFor } from './tar.ts';
import { CHILDREN_FOLDER, MANIFEST_ENTRY, MAX_METADATA_BYTES, ROOT_KEY_PACKAGE_ENTRY, SIGNATURE_ENTRY, childEntryName, payloadEntryName } from './layout.ts';

type FilePaths = ReadonlyMap<string, string> | Readonly<Record<string, string>>;

export interface BundleContents {
  /** The signed manifest bytes, exactly as signed. */
  manifest: Uint8Array;
  signature: string;
  rootKeyPackage?: string;
  /** Where each payload file is on disk, by the manifest's filename (a child update's manifest included). */
  filePaths: FilePaths;
  /**
   * Where each child update's files are on disk, by the reference step's `detachedManifestFileId`, then by the
   * child manifest's filename. Needed for every file of a child that the parent (or an earlier child) does not
   * already declare under the same file id.
   */
  childFilePaths?: ReadonlyMap<string, FilePaths> | Readonly<Record<string, FilePaths>>;
}

export interface BundleProgress {
  bytesDone: number;
  bytesTotal: number;
  filename: string;
}

/** One payload entry to write: its name in the bundle, the signed entry it must match, and its source on disk. */
interface PayloadSource {
  entryName: string;
  file: UpdateFile;
  path: string;
}

/**
 * Writes an offline bundle (a tar file) atomically: metadata entries, then every file the manifest declares, then
 * the files of each child update its reference steps name (`children/<file id>/<filename>`), each checked against
 * its signed size and sha256 while it is copied, so a bundle that does not verify is never produced. Memory stays
 * at one read buffer whatever the payload size.
 */
export async function writeBundle(contents: BundleContents, outputPath: string, onProgress?: (p: BundleProgress) => void): Promise<{ bytes: number }> {
  const manifest = parseUpdateManifest(contents.manifest);
  if (isDetachedManifestPointer(manifest)) {
    throw new OtaError('UPDATE_MANIFEST_INVALID', 'bundle: needs a full update manifest, not a detached-manifest pointer', { field: '/' });
  }
  if (contents.rootKeyPackage !== undefined) parseRootKeyPackage(contents.rootKeyPackage);
  const paths = asMap(contents.filePaths);
  const payload: PayloadSource[] = [];
  for (const file of Object.values(manifest.files)) {
    const path = paths.get(file.filename);
    if (!path) throw new OtaError('BUNDLE_FILE_MISSING', `bundle: no path given for manifest file ${JSON.stringify(file.filename)}`, { field: file.filename });
    payload.push({ entryName: payloadEntryName(file.filename), file, path });
  }
  payload.push(...(await childPayload(manifest, paths, contents.childFilePaths)));
  for (const { file, path } of payload) {
    const size = (await stat(path)).size;
    if (size !== file.sizeInBytes) {
      throw new OtaError('BUNDLE_SIZE_MISMATCH', `bundle: ${path} has ${size} bytes, the manifest says ${file.sizeInBytes}`, { field: file.filename });
    }
  }
  const mtime = Math.floor(dateTimeMillis(manifest.createdDateTime) / 1000);
  const bytesTotal = payload.reduce((sum, p) => sum + p.file.sizeInBytes, 0);
  let bytesDone = 0;
  let written = 0;

  function* entryHeader(name: string, size: number): Generator<Buffer> {
    if (Buffer.byteLength(name) > 100) yield* encodePaxPath(name, mtime);
    yield encodeTarHeader({ name: Buffer.byteLength(name) > 100 ? name.slice(0, 99) : name, size, mtime });
  }
  function* metadataEntry(name: string, data: Buffer): Generator<Buffer> {
    yield* entryHeader(name, data.length);
    yield data;
    yield paddingFor(data.length);
  }

  async function* archive(): AsyncGenerator<Buffer> {
    yield* metadataEntry(MANIFEST_ENTRY, Buffer.from(contents.manifest));
    yield* metadataEntry(SIGNATURE_ENTRY, Buffer.from(contents.signature, 'utf8'));
    if (contents.rootKeyPackage !== undefined) yield* metadataEntry(ROOT_KEY_PACKAGE_ENTRY, Buffer.from(contents.rootKeyPackage, 'utf8'));
    for (const { entryName, file, path } of payload) {
      yield* entryHeader(entryName, file.sizeInBytes);
      const hash = createHash('sha256');
      let copied = 0;
      for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
        const data = chunk as Buffer;
        hash.update(data);
        copied += data.length;
        if (copied > file.sizeInBytes) throw new OtaError('BUNDLE_SIZE_MISMATCH', `bundle: ${file.filename} grew while it was packed`);
        bytesDone += data.length;
        onProgress?.({ bytesDone, bytesTotal, filename: file.filename });
        yield data;
      }
      if (copied !== file.sizeInBytes) throw new OtaError('BUNDLE_SIZE_MISMATCH', `bundle: ${file.filename} shrank while it was packed`);
      if (!hash.digest().equals(decodeAnyBase64(file.hashes.sha256)!)) {
        throw new OtaError('BUNDLE_HASH_MISMATCH', `bundle: ${file.filename} does not match the signed sha256`, { field: file.filename });
      }
      yield paddingFor(file.sizeInBytes);
    }
    yield Buffer.alloc(2 * BLOCK);
  }

  async function* counted(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      written += chunk.length;
      yield chunk;
    }
  }

  const temporary = `${outputPath}.partial-${process.pid}`;
  try {
    await pipeline(counted(archive()), createWriteStream(temporary, { flags: 'wx' }));
    await rename(temporary, outputPath);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  return { bytes: written };
}

/**
 * The files of the child updates the manifest's reference steps name, in step order: each child's manifest is read
 * from the parent's files and checked as a device would (signed hash, inline steps only, one file id one file).
 */
async function childPayload(parent: FullUpdateManifest, parentPaths: ReadonlyMap<string, string>, childFilePaths: BundleContents['childFilePaths']): Promise<PayloadSource[]> {
  const references = referenceStepsOf(parent);
  if (references.length === 0) return [];
  if (Object.values(parent.files).some((f) => f.filename === CHILDREN_FOLDER)) {
    throw new OtaError('BUNDLE_PATH_REFUSED', `bundle: a parent file of an update with reference steps cannot be named "${CHILDREN_FOLDER}": a device extracts the children's files there`, {
      field: CHILDREN_FOLDER,
    });
  }
  const byChild = asMap(childFilePaths ?? {});
  const fileIds = new UpdateFileIds(parent);
  const sources: PayloadSource[] = [];
  for (const reference of references) {
    const manifestPath = parentPaths.get(reference.childName)!;
    const signed = parent.files[reference.fileId]!;
    const size = (await stat(manifestPath)).size;
    if (size !== signed.sizeInBytes) {
      throw new OtaError('BUNDLE_SIZE_MISMATCH', `bundle: ${manifestPath} has ${size} bytes, the manifest says ${signed.sizeInBytes}`, { field: signed.filename });
    }
    if (size > MAX_METADATA_BYTES) {
      throw new OtaError('BUNDLE_TOO_LARGE', `bundle: child update manifest ${reference.childName} of ${size} bytes exceeds ${MAX_METADATA_BYTES}`, { field: signed.filename });
    }
    const bytes = await readFile(manifestPath);
    if (!createHash('sha256').update(bytes).digest().equals(decodeAnyBase64(signed.hashes.sha256)!)) {
      throw new OtaError('BUNDLE_HASH_MISMATCH', `bundle: ${manifestPath} (child update manifest ${reference.childName}) does not match the signed sha256`, { field: reference.childName });
    }
    const child = parseChildManifest(parent, reference, bytes);
    const added = fileIds.addChild(child, reference);
    childInlineSteps(child, reference);
    const paths = asMap(byChild.get(reference.fileId) ?? {});
    for (const [, file] of added) {
      const path = paths.get(file.filename);
      if (!path) {
        throw new OtaError('BUNDLE_FILE_MISSING', `bundle: no path given for file ${JSON.stringify(file.filename)} of child update manifest ${reference.childName} (file id ${reference.fileId}, ${reference.pointer})`, {
          field: childEntryName(reference.fileId, file.filename),
        });
      }
      sources.push({ entryName: childEntryName(reference.fileId, file.filename), file, path });
    }
  }
  return sources;
}

function asMap<T>(value: ReadonlyMap<string, T> | Readonly<Record<string, T>>): ReadonlyMap<string, T> {
  return value instanceof Map ? value : new Map(Object.entries(value as Record<string, T>));
}
