import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { OtaError } from '../errors.ts';
import { decodeAnyBase64 } from '../encoding.ts';
import { isDetachedManifestPointer } from '../manifest/types.ts';
import { dateTimeMillis } from '../manifest/rules.ts';
import { parseUpdateManifest } from '../manifest/updateManifest.ts';
import { parseRootKeyPackage } from '../signing/rootKeyPackage.ts';
import { BLOCK, encodePaxPath, encodeTarHeader, paddingFor } from './tar.ts';
import { MANIFEST_ENTRY, ROOT_KEY_PACKAGE_ENTRY, SIGNATURE_ENTRY, payloadEntryName } from './layout.ts';

export interface BundleContents {
  /** The signed manifest bytes, exactly as signed. */
  manifest: Uint8Array;
  signature: string;
  rootKeyPackage?: string;
  /** Where each payload file is on disk, by the manifest's filename. */
  filePaths: ReadonlyMap<string, string> | Readonly<Record<string, string>>;
}

export interface BundleProgress {
  bytesDone: number;
  bytesTotal: number;
  filename: string;
}

/**
 * Writes an offline bundle (a tar file) atomically: metadata entries, then every file the manifest declares,
 * each checked against its signed size and sha256 while it is copied, so a bundle that does not verify is never
 * produced. Memory stays at one read buffer whatever the payload size.
 */
export async function writeBundle(contents: BundleContents, outputPath: string, onProgress?: (p: BundleProgress) => void): Promise<{ bytes: number }> {
  const manifest = parseUpdateManifest(contents.manifest);
  if (isDetachedManifestPointer(manifest)) {
    throw new OtaError('UPDATE_MANIFEST_INVALID', 'bundle: needs a full update manifest, not a detached-manifest pointer', { field: '/' });
  }
  if (contents.rootKeyPackage !== undefined) parseRootKeyPackage(contents.rootKeyPackage);
  const paths: ReadonlyMap<string, string> =
    contents.filePaths instanceof Map ? contents.filePaths : new Map(Object.entries(contents.filePaths as Record<string, string>));
  const files = Object.values(manifest.files);
  for (const file of files) {
    const path = paths.get(file.filename);
    if (!path) throw new OtaError('BUNDLE_FILE_MISSING', `bundle: no path given for manifest file ${JSON.stringify(file.filename)}`, { field: file.filename });
    const size = (await stat(path)).size;
    if (size !== file.sizeInBytes) {
      throw new OtaError('BUNDLE_SIZE_MISMATCH', `bundle: ${path} has ${size} bytes, the manifest says ${file.sizeInBytes}`, { field: file.filename });
    }
  }
  const mtime = Math.floor(dateTimeMillis(manifest.createdDateTime) / 1000);
  const bytesTotal = files.reduce((sum, f) => sum + f.sizeInBytes, 0);
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
    for (const file of files) {
      yield* entryHeader(payloadEntryName(file.filename), file.sizeInBytes);
      const hash = createHash('sha256');
      let copied = 0;
      for await (const chunk of createReadStream(paths.get(file.filename) ?? '', { highWaterMark: 1024 * 1024 })) {
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
