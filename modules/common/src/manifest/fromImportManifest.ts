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
}

/**
 * Builds the device-facing update manifest from an import manifest: files become a map keyed by file id,
 * inline steps name file ids, reference steps point at the child's detached update manifest (which must be
 * supplied), and our edgeOta block adds id, expiry and the rollback flag. Returns the exact bytes to sign.
 */
export function updateManifestFromImport(imported: ImportManifest, options: UpdateManifestOptions): { manifest: FullUpdateManifest; bytes: Buffer } {
  const files: Record<string, UpdateFile> = {};
  const idByName = new Map<string, string>();
  const addFile = (file: UpdateFile): string => {
    // Ids are positional: stable for the same input and free of anything a device could mistake for a path.
    const id = `file${Object.keys(files).length}`;
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
  const steps: UpdateStep[] = imported.instructions.steps.map((step, i) => {
    if (step.type === 'reference') {
      const wanted = formatUpdateId(step.updateId);
      const child = options.detachedManifests?.find((d) => formatUpdateId(d.manifest.updateId) === wanted);
      if (!child) {
        throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `/instructions/steps/${i}/updateId: no detached update manifest supplied for ${wanted}`, {
          field: `/instructions/steps/${i}/updateId`,
        });
      }
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
  const edgeOta: ManifestExtension = {
    manifestId: options.manifestId ?? randomUUID(),
    expiresDateTime: options.expiresDateTime.toISOString(),
    ...(options.rollback ? { rollback: true } : {}),
    ...(options.minimumVersion ? { minimumVersion: options.minimumVersion } : {}),
  };
  // "4" is what SchemaStore's v5 update manifest schema pins and what the ADU agent reads for this shape.
  const manifest: FullUpdateManifest = {
    manifestVersion: '4',
    updateId: { ...imported.updateId },
    compatibility: imported.compatibility,
    instructions: { steps },
    files,
    createdDateTime: (options.createdDateTime ?? new Date()).toISOString(),
    edgeOta,
  };
  const bytes = Buffer.from(JSON.stringify(manifest), 'utf8');
  parseUpdateManifest(bytes);
  return { manifest, bytes };
}
