import { createHash } from 'node:crypto';
import type { FullUpdateManifest, ReferenceStep } from '@edge-ota/common';
import { childUpdateManifestFromImport, formatUpdateId, updateManifestFromImport } from '@edge-ota/common';
import type { CatalogUpdate } from './store.ts';

// What a device receives for one catalog update: its update manifest and, for each reference step, the child
// update's manifest (ADU's multi-step updates: the parent lists it as a file, so the parent's signature covers it),
// with file ids unique across parent and children (one job fetches all of them, one URL per id), and where the
// bytes of every file come from.

/** The parent's ids are file0, file1, ...; the child of step i has step{i}file0, step{i}file1, ...: never equal. */
const PARENT_FILE_ID_PREFIX = 'file';
const childFileIdPrefix = (stepIndex: number): string => `step${stepIndex}file`;

export type ManifestFileSource =
  /** A payload file, kept in the artifact store since its import. */
  | { kind: 'artifact'; artifactKey: string }
  /** A child's update manifest, built here. */
  | { kind: 'childManifest'; bytes: Buffer };

export interface ManifestFile {
  fileId: string;
  filename: string;
  source: ManifestFileSource;
}

export interface UpdateManifests {
  manifest: FullUpdateManifest;
  /** The exact bytes to sign. */
  bytes: Buffer;
  /** Every file of the update and its children, in manifest order, each id once. */
  files: ManifestFile[];
}

export interface UpdateManifestsOptions {
  expiresDateTime: Date;
  manifestId: string;
  createdDateTime: Date;
  rollback?: boolean;
}

/** How ADU names a child's update manifest among the parent's files. */
export function childManifestFileName(child: Pick<CatalogUpdate, 'provider' | 'name' | 'version'>): string {
  return `${child.provider}.${child.name}.${child.version}.updatemanifest.json`.toLowerCase();
}

/**
 * `children`: the catalog entries the update's reference steps name (Catalog.childrenOf). An update without
 * reference steps gives exactly the manifest it always had.
 */
export function composeUpdateManifests(update: CatalogUpdate, children: readonly CatalogUpdate[], options: UpdateManifestsOptions): UpdateManifests {
  const built = update.importManifest.instructions.steps.flatMap((step, stepIndex) => {
    if (step.type !== 'reference') return [];
    const wanted = formatUpdateId(step.updateId);
    const child = children.find((c) => c.updateId === wanted);
    if (!child) throw new Error(`${update.updateId}: step ${stepIndex} names ${wanted}, which was not supplied`);
    return [{ stepIndex, child, ...childUpdateManifestFromImport(child.importManifest, { fileIdPrefix: childFileIdPrefix(stepIndex) }) }];
  });
  const { manifest, bytes } = updateManifestFromImport(update.importManifest, {
    expiresDateTime: options.expiresDateTime,
    manifestId: options.manifestId,
    createdDateTime: options.createdDateTime,
    fileIdPrefix: PARENT_FILE_ID_PREFIX,
    ...(options.rollback ? { rollback: true } : {}),
    detachedManifests: built.map((b) => ({
      manifest: b.manifest,
      file: { filename: childManifestFileName(b.child), sizeInBytes: b.bytes.length, hashes: { sha256: createHash('sha256').update(b.bytes).digest('base64') } },
    })),
  });

  const childManifestById = new Map(built.map((b) => [(manifest.instructions.steps[b.stepIndex] as ReferenceStep).detachedManifestFileId, b.bytes]));
  const files: ManifestFile[] = Object.entries(manifest.files).map(([fileId, file]) => {
    const childManifest = childManifestById.get(fileId);
    return { fileId, filename: file.filename, source: childManifest ? { kind: 'childManifest', bytes: childManifest } : storedArtifact(update, file.filename) };
  });
  for (const b of built) {
    for (const [fileId, file] of Object.entries(b.manifest.files)) files.push({ fileId, filename: file.filename, source: storedArtifact(b.child, file.filename) });
  }
  const ids = new Set(files.map((f) => f.fileId));
  if (ids.size !== files.length) throw new Error(`${update.updateId}: file ids of the update and its children are not unique`);
  return { manifest, bytes, files };
}

function storedArtifact(update: CatalogUpdate, filename: string): ManifestFileSource {
  const stored = update.files.find((f) => f.filename === filename);
  if (!stored) throw new Error(`catalog entry ${update.updateId} has no artifact for ${filename}`);
  return { kind: 'artifact', artifactKey: stored.artifactKey };
}
