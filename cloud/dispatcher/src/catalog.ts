import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { ImportManifest, TrustStore } from '@edge-ota/common';
import { formatUpdateId, isOtaError, isReferenceStep, parseImportManifest, readBundle } from '@edge-ota/common';
import type { ArtifactStore } from './artifactStore.ts';
import { DispatcherError } from './errors.ts';
import type { CatalogFile, CatalogUpdate, DispatcherStore } from './store.ts';

// The update catalog: what can be assigned to devices. An update enters either as an ADU import manifest with
// its files, or as a signed offline bundle; either way its files go to the artifact store and the import
// manifest is kept, because the dispatcher issues a fresh signed manifest (own id and expiry) per deployment.

export class Catalog {
  readonly #store: DispatcherStore;
  readonly #artifacts: ArtifactStore;
  readonly #trustStore: TrustStore;
  readonly #entries = new Map<string, CatalogUpdate>();

  constructor(store: DispatcherStore, artifacts: ArtifactStore, trustStore: TrustStore) {
    this.#store = store;
    this.#artifacts = artifacts;
    this.#trustStore = trustStore;
  }

  async importManifest(manifestBytes: Buffer, files: ReadonlyMap<string, Buffer>): Promise<CatalogUpdate> {
    let manifest: ImportManifest;
    try {
      manifest = parseImportManifest(manifestBytes);
    } catch (error) {
      throw refused(error);
    }
    this.#checkDeliverable(manifest);
    const stored: CatalogFile[] = [];
    for (const file of manifest.files ?? []) {
      const bytes = files.get(file.filename);
      if (!bytes) throw new DispatcherError('UPDATE_FILE_MISSING', `file ${file.filename} was not supplied`, { filename: file.filename });
      const artifact = await this.#artifacts.put(bytes);
      // The import manifest's size and hash are what devices will check: refuse files that do not match them now.
      if (artifact.sizeInBytes !== file.sizeInBytes || artifact.sha256 !== file.hashes.sha256) {
        throw new DispatcherError('UPDATE_INVALID', `file ${file.filename} does not match the size or sha256 of the import manifest`, { filename: file.filename });
      }
      stored.push({ filename: file.filename, sizeInBytes: file.sizeInBytes, sha256: file.hashes.sha256, artifactKey: artifact.key });
    }
    return this.#insert(manifest, stored, 'import');
  }

  /** A bundle is verified against the dispatcher's trust roots before anything of it is kept. */
  async importBundle(source: Readable): Promise<CatalogUpdate> {
    const dir = await mkdtemp(path.join(tmpdir(), 'dispatcher-bundle-'));
    try {
      let bundle;
      try {
        bundle = await readBundle(source, { trustStore: this.#trustStore, extractTo: dir });
      } catch (error) {
        throw refused(error);
      }
      const { manifest } = bundle;
      if (manifest.instructions.steps.some(isReferenceStep)) {
        throw new DispatcherError('UPDATE_UNSUPPORTED', 'bundles with reference steps (component updates) cannot be dispatched yet');
      }
      // Re-express the signed manifest as an import manifest, so bundle updates are issued like imported ones.
      const nameOf = (fileId: string): string => manifest.files[fileId]!.filename ?? (manifest.files[fileId] as unknown as { fileName: string }).fileName;
      const imported: ImportManifest = {
        updateId: manifest.updateId,
        compatibility: manifest.compatibility,
        instructions: {
          steps: manifest.instructions.steps.map((step) => {
            const inline = step as { handler: string; files: string[]; handlerProperties?: Record<string, unknown> };
            return { handler: inline.handler, files: inline.files.map(nameOf), ...(inline.handlerProperties ? { handlerProperties: inline.handlerProperties } : {}) };
          }),
        },
        files: Object.keys(manifest.files).map((id) => {
          const f = manifest.files[id]!;
          return { filename: nameOf(id), sizeInBytes: f.sizeInBytes, hashes: { sha256: f.hashes.sha256 } };
        }),
        manifestVersion: '5.0',
        createdDateTime: manifest.createdDateTime,
      };
      const stored: CatalogFile[] = [];
      for (const file of bundle.files) {
        const artifact = await this.#artifacts.put(await readFile(file.path!));
        stored.push({ filename: file.filename, sizeInBytes: file.sizeInBytes, sha256: artifact.sha256, artifactKey: artifact.key });
      }
      return this.#insert(imported, stored, 'bundle');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  get(updateId: string): CatalogUpdate | undefined {
    // A catalog entry never changes once imported (updates are inserted once, never edited or removed), so it is
    // read and parsed once rather than on every device created and every job planned.
    const cached = this.#entries.get(updateId);
    if (cached) return cached;
    const update = this.#store.getUpdate(updateId);
    if (update) this.#entries.set(updateId, update);
    return update;
  }

  list(): CatalogUpdate[] {
    return this.#store.listUpdates();
  }

  #checkDeliverable(manifest: ImportManifest): void {
    if (manifest.instructions.steps.some((s) => s.type === 'reference')) {
      throw new DispatcherError('UPDATE_UNSUPPORTED', 'reference steps (component updates) cannot be dispatched yet');
    }
  }

  #insert(manifest: ImportManifest, files: CatalogFile[], source: CatalogUpdate['source']): CatalogUpdate {
    const update: CatalogUpdate = {
      updateId: formatUpdateId(manifest.updateId),
      ...manifest.updateId,
      importManifest: manifest,
      files,
      source,
      importedAt: new Date().toISOString(),
    };
    if (!this.#store.insertUpdate(update)) throw new DispatcherError('UPDATE_EXISTS', `${update.updateId} is in the catalog already`, { updateId: update.updateId });
    return update;
  }
}

function refused(error: unknown): DispatcherError {
  if (isOtaError(error)) {
    return new DispatcherError('UPDATE_INVALID', error.message, { otaCode: error.code, resultCode: error.resultCode, extendedResultCode: error.extendedResultCode });
  }
  return new DispatcherError('UPDATE_INVALID', (error as Error).message);
}
