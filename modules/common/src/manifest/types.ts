// Shapes of Azure Device Update's manifests, field names exactly as ADU spells them.

export interface UpdateId {
  provider: string;
  name: string;
  version: string;
}

/** One set of device properties an update is for (deviceManufacturer, deviceModel, custom ones). */
export type CompatibilityInfo = Record<string, string>;

export interface FileHashes {
  sha256: string;
  [algorithm: string]: string;
}

export interface RelatedFile {
  filename: string;
  sizeInBytes: number;
  hashes: FileHashes;
  properties?: Record<string, unknown>;
}

export interface UpdateFile extends RelatedFile {
  relatedFiles?: RelatedFile[];
  downloadHandler?: { id: string };
  [extra: string]: unknown;
}

export interface ImportInlineStep {
  type?: 'inline';
  description?: string;
  handler: string;
  /** File names (import manifest) */
  files: string[];
  handlerProperties?: Record<string, unknown>;
}

export interface ImportReferenceStep {
  type: 'reference';
  description?: string;
  updateId: UpdateId;
}

export type ImportStep = ImportInlineStep | ImportReferenceStep;

export interface ImportManifest {
  updateId: UpdateId;
  description?: string;
  compatibility: CompatibilityInfo[];
  instructions: { steps: ImportStep[] };
  files: UpdateFile[];
  manifestVersion: '5.0';
  createdDateTime: string;
  [extra: string]: unknown;
}

export interface InlineStep {
  type?: 'inline';
  handler: string;
  /** File ids: keys of the manifest's files map */
  files: string[];
  handlerProperties?: Record<string, unknown>;
}

export interface ReferenceStep {
  type: 'reference';
  detachedManifestFileId: string;
}

export type UpdateStep = InlineStep | ReferenceStep;

/**
 * Our additions, in one namespaced block so ADU's (open) top level keeps validating and an ADU agent ignores it.
 * Covered by the manifest signature like every other byte.
 */
export interface ManifestExtension {
  /** Unique per issued manifest: a device refuses an id it has accepted before. */
  manifestId: string;
  /** After this instant the manifest is refused, bounding how long a captured manifest stays useful. */
  expiresDateTime: string;
  /** Set by the signer to allow installing a lower version than the one running. */
  rollback?: boolean;
  /** The target must already run at least this version (an update path requirement). */
  minimumVersion?: string;
}

export interface FullUpdateManifest {
  manifestVersion: '4' | '5';
  updateId: UpdateId;
  compatibility: CompatibilityInfo[];
  instructions: { steps: UpdateStep[] };
  files: Record<string, UpdateFile>;
  createdDateTime: string;
  edgeOta?: ManifestExtension;
  [extra: string]: unknown;
}

/** ADU's mini manifest: a signed pointer to a detached full manifest (for twin size limits). */
export interface DetachedManifestPointer {
  manifestVersion: '4' | '5';
  updateId: UpdateId;
  detachedManifestFileId: string;
  files: Record<string, UpdateFile>;
  edgeOta?: ManifestExtension;
  [extra: string]: unknown;
}

export type UpdateManifest = FullUpdateManifest | DetachedManifestPointer;

export function isDetachedManifestPointer(manifest: UpdateManifest): manifest is DetachedManifestPointer {
  return typeof manifest.detachedManifestFileId === 'string' && !('instructions' in manifest);
}

export function isReferenceStep(step: UpdateStep): step is ReferenceStep {
  return step.type === 'reference';
}

export function formatUpdateId(id: UpdateId): string {
  return `${id.provider}/${id.name}@${id.version}`;
}
