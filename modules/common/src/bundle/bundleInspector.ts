import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { OtaError } from '../errors.ts';
import { decodeBase64url, isPlainObject } from '../encoding.ts';
import { parseUpdateManifest } from '../manifest/updateManifest.ts';
import type { UpdateManifest } from '../manifest/types.ts';
import { parseRootKeyPackage } from '../signing/rootKeyPackage.ts';
import { ByteCursor } from './byteCursor.ts';
import { MANIFEST_ENTRY, MAX_METADATA_BYTES, ROOT_KEY_PACKAGE_ENTRY, SIGNATURE_ENTRY } from './layout.ts';
import { nextTarEntry, readPadded, skipPadding } from './tar.ts';

export interface BundleInspection {
  entries: { name: string; size: number; typeflag: string }[];
  /** Parsed but NOT verified: for looking, never for deciding. */
  manifest?: UpdateManifest;
  signature?: { alg: unknown; signingKeyKid: unknown; rootKid: unknown };
  rootKeyPackageVersion?: number;
}

/**
 * Lists a bundle's entries and reads its metadata without checking any signature or hash: what `ota bundle
 * inspect` shows. Use `readBundle` for anything that acts on the content.
 */
export async function inspectBundle(source: string | Readable): Promise<BundleInspection> {
  const stream = typeof source === 'string' ? createReadStream(source, { highWaterMark: 1024 * 1024 }) : source;
  try {
    const cursor = new ByteCursor(stream as AsyncIterable<Buffer>);
    const result: BundleInspection = { entries: [] };
    for (let header = await nextTarEntry(cursor); header; header = await nextTarEntry(cursor)) {
      result.entries.push({ name: header.name, size: header.size, typeflag: header.typeflag });
      const isMetadata = [MANIFEST_ENTRY, SIGNATURE_ENTRY, ROOT_KEY_PACKAGE_ENTRY].includes(header.name) && header.size <= MAX_METADATA_BYTES;
      if (!isMetadata) {
        if (!(await cursor.skip(header.size))) throw new OtaError('BUNDLE_TRUNCATED', `bundle entry ${JSON.stringify(header.name)}: ends early`);
        await skipPadding(cursor, header.size);
        continue;
      }
      const data = await readPadded(cursor, header.size);
      if (header.name === MANIFEST_ENTRY) result.manifest = parseUpdateManifest(data);
      if (header.name === ROOT_KEY_PACKAGE_ENTRY) result.rootKeyPackageVersion = parseRootKeyPackage(data).protected.version;
      if (header.name === SIGNATURE_ENTRY) result.signature = describeSignature(data.toString('utf8'));
    }
    return result;
  } finally {
    if (typeof source === 'string') stream.destroy();
  }
}

function describeSignature(jws: string): BundleInspection['signature'] {
  const json = (part: string | undefined): Record<string, unknown> => {
    try {
      const value = JSON.parse(decodeBase64url(part ?? '')?.toString('utf8') ?? 'null') as unknown;
      return isPlainObject(value) ? value : {};
    } catch {
      return {};
    }
  };
  const header = json(jws.split('.')[0]);
  const sjwk = typeof header.sjwk === 'string' ? header.sjwk.split('.') : [];
  return { alg: header.alg, signingKeyKid: json(sjwk[1]).kid, rootKid: json(sjwk[0]).kid };
}
