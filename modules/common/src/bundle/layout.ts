// Entry names inside an offline bundle. Metadata comes first so a reader can establish trust before it reads
// (and hashes) a single payload byte; a child update's files come after the parent entry holding its manifest, so
// a reader knows what to expect of them before it reads them.
export const MANIFEST_ENTRY = 'updatemanifest.json';
export const SIGNATURE_ENTRY = 'updatemanifest.json.jws';
export const ROOT_KEY_PACKAGE_ENTRY = 'rootkeypackage.json';
export const FILES_PREFIX = 'files/';
/** A child update's files: `children/<detachedManifestFileId>/<filename>` (two children may both ship `install.sh`). */
export const CHILDREN_PREFIX = 'children/';
/**
 * Where a reader extracts the children's files (`<extractTo>/children/<file id>/`), beside the parent's files
 * (`<extractTo>/<filename>`): a parent file of an update with reference steps cannot have this name.
 */
export const CHILDREN_FOLDER = 'children';
/** Upper bound for each metadata entry (and each child update manifest); a larger one is refused before it is buffered. */
export const MAX_METADATA_BYTES = 1024 * 1024;
/** Suggested file extension. */
export const BUNDLE_EXTENSION = '.otabundle';

export function payloadEntryName(filename: string): string {
  return `${FILES_PREFIX}${filename}`;
}

/** The entry of a child update's file, by the parent's file id of the child's manifest (the reference step's). */
export function childEntryName(childManifestFileId: string, filename: string): string {
  return `${CHILDREN_PREFIX}${childManifestFileId}/${filename}`;
}
