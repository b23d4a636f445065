import { randomUUID } from 'node:crypto';
import { OtaError } from '../errors.ts';
import { parseUpdateManifest } from './updateManifest.ts';
import type { FullUpdateManifest, ImportManifest, ManifestExtension, UpdateFile, UpdateStep } from './types.ts';
import { formatUpdateId } from './types.ts';

export interface DetachedManifestFile {
  /** The child update's update manifest, exactly as it will be shipped. */
  manifest: FullUpdateManifest;
  file: UpdateFile;
}

export interface UpdateManifestOptions {
  /** Lifetime of the issued manifest. */
  expiresDateTime: Date;
  manifestId?: string;
  rollback?: boolean;
  minimumVersion?: string;
  createdDateTime?: Date;
  /** Update manifests of the updates that reference steps install, by child updateId. */
  detachedManifests?: readonly DetachedManifestFile[];
  /**
   * File ids are this prefix and the file's position: `file0`, `file1`, ... by default. A parent and its children
   * (whose files a device fetches in one job) each get a prefix of their own, so their ids are unique across them.
   */
  fileIdPrefix?: string;
}

export interface ChildUpdateManifestOptions {
  /** As for the parent: the child's ids are this prefix and the file's position. */
  fileIdPrefix: string;
}

/** Letters and digits only: a file id never reads as a path, and prefix + position stays one plain token. */
const FILE_ID_PREFIX = /^[A-Za-z][A-Za-z0-9]{0,31}$/;

/**
 * Builds the device-facing update manifest from an import manifest: files become a map keyed by file id,
 * inline steps name file ids, reference steps point at the child's detached update manifest (which must be
 * supplied), and our edgeOta block adds id, expiry and the rollback flag. Returns the exact bytes to sign.
 */
export function updateManifestFromImport(imported: ImportManifest, options: UpdateManifestOptions): { manifest: FullUpdateManifest; bytes: Buffer } {
  const { steps, files } = stepsAndFiles(imported, options.fileIdPrefix ?? 'file', options.detachedManifests ?? []);
  const edgeOta: ManifestExtension = {
    manifestId: options.manifestId ?? randomUUID(),
    expiresDateTime: options.expiresDateTime.toISOString(),
    ...(options.rollback ? { rollback: true } : {}),
    ...(options.minimumVersion ? { minimumVersion: options.minimumVersion } : {}),
  };
  // "4" is what SchemaStore's v5 update manifest schema pins and what the ADU agent reads for this shape.
  return issued({
    manifestVersion: '4',
    updateId: { ...imported.updateId },
    compatibility: imported.compatibility,
    instructions: { steps },
    files,
    createdDateTime: (options.createdDateTime ?? new Date()).toISOString(),
    edgeOta,
  });
}

/**
 * The update manifest of a child update, the detached manifest a parent's reference step installs (ADU's
 * multi-step updates). It carries no edgeOta block: it is never signed itself, the parent's signed hash covers
 * its bytes and the parent's edgeOta its lifetime. Its createdDateTime is the import manifest's, so the same
 * child under the same prefix gives the same bytes every time. A child cannot reference other updates (one
 * level, as in ADU).
 */
export function childUpdateManifestFromImport(imported: ImportManifest, options: ChildUpdateManifestOptions): { manifest: FullUpdateManifest; bytes: Buffer } {
  const nested = imported.instructions.steps.findIndex((step) => step.type === 'reference');
  if (nested >= 0) {
    const field = `/instructions/steps/${nested}`;
    throw new OtaError('IMPORT_MANIFEST_INVALID', `${field}: ${formatUpdateId(imported.updateId)} is a child update and cannot have reference steps`, { field });
  }
  const { steps, files } = stepsAndFiles(imported, options.fileIdPrefix, []);
  return issued({
    manifestVersion: '4',
    updateId: { ...imported.updateId },
    compatibility: imported.compatibility,
    instructions: { steps },
    files,
    createdDateTime: imported.createdDateTime,
  });
}

function stepsAndFiles(imported: ImportManifest, fileIdPrefix: string, detachedManifests: readonly DetachedManifestFile[]): { steps: UpdateStep[]; files: Record<string, UpdateFile> } {
  if (!FILE_ID_PREFIX.test(fileIdPrefix)) throw new RangeError(`file id prefix ${JSON.stringify(fileIdPrefix)} must be a letter and up to 31 letters or digits`);
  const files: Record<string, UpdateFile> = {};
  const idByName = new Map<string, string>();
  const addFile = (file: UpdateFile): string => {
    // Ids are positional: stable for the same input and free of anything a device could mistake for a path.
    const id = `${fileIdPrefix}${Object.keys(files).length}`;
    files[id] = file;
    idByName.set(file.filename, id);
    return id;
  };
  for (const file of imported.files ?? []) {
    const { filename, sizeInBytes, hashes, properties, relatedFiles, downloadHandler } = file;
    addFile({
      filename,
      sizeInBytes,
      hashes,
      ...(properties ? { properties } : {}),
      ...(relatedFiles ? { relatedFiles } : {}),
      ...(downloadHandler ? { downloadHandler } : {}),
    });
  }
  const referenced = new Set<string>();
  const steps: UpdateStep[] = imported.instructions.steps.map((step, i) => {
    if (step.type === 'reference') {
      const wanted = formatUpdateId(step.updateId);
      const field = `/instructions/steps/${i}/updateId`;
      const child = detachedManifests.find((d) => formatUpdateId(d.manifest.updateId) === wanted);
      if (!child) throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${field}: no detached update manifest supplied for ${wanted}`, { field });
      if (referenced.has(wanted)) throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${field}: ${wanted} is referenced by an earlier step already`, { field });
      referenced.add(wanted);
      if (idByName.has(child.file.filename)) {
        throw new OtaError('MANIFEST_FILE_NAME_UNSAFE', `/instructions/steps/${i}: ${child.file.filename} clashes with a payload file name`, {
          field: `/instructions/steps/${i}`,
        });
      }
      return { type: 'reference', detachedManifestFileId: addFile(child.file) };
    }
    return {
      handler: step.handler,
      files: step.files.map((name) => idByName.get(name)!),
      ...(step.handlerProperties ? { handlerProperties: step.handlerProperties } : {}),
    };
  });
  return { steps, files };
}

/** The bytes as they will be shipped, checked the way a device will check them (ADU's schema and our rules). */
function issued(manifest: FullUpdateManifest): { manifest: FullUpdateManifest; bytes: Buffer } {
  const bytes = Buffer.from(JSON.stringify(manifest), 'utf8');
  parseUpdateManifest(bytes);
  return { manifest, bytes };
}
