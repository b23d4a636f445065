// Entry names inside an offline bundle. Metadata comes first so a reader can establish trust before it reads
// (and hashes) a single payload byte.
export const MANIFEST_ENTRY = 'updatemanifest.json';
export const SIGNATURE_ENTRY = 'updatemanifest.json.jws';
export const ROOT_KEY_PACKAGE_ENTRY = 'rootkeypackage.json';
export const FILES_PREFIX = 'files/';
/** Upper bound for each metadata entry; a larger one is refused before it is buffered. */
export const MAX_METADATA_BYTES = 1024 * 1024;
/** Suggested file extension. */
export const BUNDLE_EXTENSION = '.otabundle';

export function payloadEntryName(filename: string): string {
  return `${FILES_PREFIX}${filename}`;
}
