import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { ImportManifest, ImportReferenceStep, ImportStep, TrustStore } from '@edge-ota/common';
import { MAX_DELIVERY_FILE_URLS, formatUpdateId, isOtaError, isReferenceStep, parseImportManifest, readBundle } from '@edge-ota/common';
import type { ArtifactStore } from './artifactStore.ts';
import { DispatcherError } from './errors.ts';
import type { CatalogFile, CatalogUpdate, DispatcherStore } from './store.ts';
import { composeUpdateManifests } from './updateManifests.ts';

// The update catalog: what can be assigned to devices. An update enters either as an ADU import manifest with
// its files, or as a signed offline bundle; either way its files go to the artifact store and the import
// manifest is kept, because the dispatcher issues a fresh signed manifest (own id and expiry) per deployment.
// An update with reference steps (ADU's multi-step updates) names child updates that must be in the catalog
// already or be imported with it; a child cannot have reference steps of its own (one level, as in ADU).

/** An import manifest and its files by file name, as a request brings them. */
export interface UpdateImport {
  manifest: Buffer;
  files: ReadonlyMap<string, Buffer>;
}

interface ParsedImport {
  manifest: ImportManifest;
  files: ReadonlyMap<string, Buffer>;
  /** Where it sits in the request, for refusals: '' for the parent, '/children/{i}' for a child. */
  at: string;
}

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

  /** Imports an update and the children its reference steps name that are not in the catalog yet: all or nothing. */
  async importManifest(manifestBytes: Buffer, files: ReadonlyMap<string, Buffer>, children: readonly UpdateImport[] = []): Promise<CatalogUpdate> {
    const parent: ParsedImport = { manifest: parsed(manifestBytes, ''), files, at: '' };
    const imported = children.map((child, i): ParsedImport => ({ manifest: parsed(child.manifest, `/children/${i}`), files: child.files, at: `/children/${i}` }));
    this.#checkReferences(parent, imported);
    const entries: CatalogUpdate[] = [];
    for (const update of [...imported, parent]) entries.push(this.#entry(update.manifest, await this.#storeFiles(update), 'import'));
    return this.#admit(entries);
  }

  /**
   * Every reference step of the parent names an update in the catalog or among the request's children, each at
   * most once; neither the parent nor a child it names has reference steps of its own; every child in the request
   * is named. No cycle can form: the parent is never its own child, and children reference nothing.
   */
  #checkReferences(parent: ParsedImport, children: readonly ParsedImport[]): void {
    const parentId = formatUpdateId(parent.manifest.updateId);
    const inRequest = new Map<string, ParsedImport>();
    for (const child of children) {
      const childId = formatUpdateId(child.manifest.updateId);
      if (childId === parentId) throw new DispatcherError('UPDATE_INVALID', `${child.at}: ${childId} is the parent update itself`, { field: child.at, updateId: childId });
      if (inRequest.has(childId)) throw new DispatcherError('UPDATE_INVALID', `${child.at}: ${childId} is in the request twice`, { field: child.at, updateId: childId });
      inRequest.set(childId, child);
    }
    const named = new Set<string>();
    parent.manifest.instructions.steps.forEach((step, i) => {
      if (!isImportReferenceStep(step)) return;
      const childId = formatUpdateId(step.updateId);
      const field = `/importManifest/instructions/steps/${i}/updateId`;
      if (childId === parentId) throw new DispatcherError('UPDATE_INVALID', `${field}: ${parentId} references itself`, { field, updateId: childId });
      if (named.has(childId)) throw new DispatcherError('UPDATE_INVALID', `${field}: ${childId} is referenced by an earlier step already`, { field, updateId: childId });
      named.add(childId);
      const child = inRequest.get(childId)?.manifest ?? this.get(childId)?.importManifest;
      if (!child) {
        throw new DispatcherError('UPDATE_CHILD_MISSING', `${field}: ${childId} is neither in the catalog nor among the request's children`, { field, updateId: childId });
      }
      const nested = child.instructions.steps.findIndex(isImportReferenceStep);
      if (nested >= 0) {
        throw new DispatcherError('UPDATE_INVALID', `${field}: ${childId} has reference steps itself (step ${nested}); a child update can only have inline steps (one level, as in ADU)`, {
          field, updateId: childId,
        });
      }
    });
    for (const [childId, child] of inRequest) {
      if (!named.has(childId)) throw new DispatcherError('UPDATE_INVALID', `${child.at}: ${childId} is not named by a reference step of ${parentId}`, { field: child.at, updateId: childId });
    }
  }

  /** The import manifest's files into the artifact store; size and sha256 are what devices will check, so they must match now. */
  async #storeFiles({ manifest, files, at }: ParsedImport): Promise<CatalogFile[]> {
    const updateId = formatUpdateId(manifest.updateId);
    const stored: CatalogFile[] = [];
    for (const file of manifest.files ?? []) {
      const bytes = files.get(file.filename);
      if (!bytes) throw new DispatcherError('UPDATE_FILE_MISSING', `${at ? `${at}: ` : ''}file ${file.filename} of ${updateId} was not supplied`, { filename: file.filename, updateId });
      const artifact = await this.#artifacts.put(bytes);
      if (artifact.sizeInBytes !== file.sizeInBytes || artifact.sha256 !== file.hashes.sha256) {
        throw new DispatcherError('UPDATE_INVALID', `${at ? `${at}: ` : ''}file ${file.filename} of ${updateId} does not match the size or sha256 of the import manifest`, {
          filename: file.filename, updateId,
        });
      }
      stored.push({ filename: file.filename, sizeInBytes: file.sizeInBytes, sha256: file.hashes.sha256, artifactKey: artifact.key });
    }
    return stored;
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
        // The bundle verified with its children's files, but the catalog keeps import manifests: turning each child
        // manifest back into one and admitting it (or matching it to a catalog entry) with the parent is not built.
        throw new DispatcherError('UPDATE_UNSUPPORTED', 'importing a bundle with reference steps is not supported: import a multi-step update as import manifests (POST /updates with its children)');
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
      return this.#admit([this.#entry(imported, stored, 'bundle')]);
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

  /** The child updates an update's reference steps install, in step order (its import made sure they are here). */
  childrenOf(update: CatalogUpdate): CatalogUpdate[] {
    return update.importManifest.instructions.steps.filter(isImportReferenceStep).map((step) => {
      const childId = formatUpdateId(step.updateId);
      const child = this.get(childId);
      if (!child) throw new Error(`catalog entry ${update.updateId} names ${childId}, which is not in the catalog`);
      return child;
    });
  }

  #entry(manifest: ImportManifest, files: CatalogFile[], source: CatalogUpdate['source']): CatalogUpdate {
    return { updateId: formatUpdateId(manifest.updateId), ...manifest.updateId, importManifest: manifest, files, source, importedAt: new Date().toISOString() };
  }

  /**
   * Issues the last entry's manifests once, as a job would (refusing here what could not be delivered later), then
   * inserts the entries all together. The last entry is the one imported; the others are children imported with it.
   */
  #admit(entries: readonly CatalogUpdate[]): CatalogUpdate {
    const update = entries[entries.length - 1]!;
    const children = update.importManifest.instructions.steps.filter(isImportReferenceStep)
      .map((step) => entries.find((e) => e.updateId === formatUpdateId(step.updateId)) ?? this.get(formatUpdateId(step.updateId))!);
    let fileCount: number;
    try {
      fileCount = composeUpdateManifests(update, children, { expiresDateTime: new Date(), manifestId: 'catalog-import-check', createdDateTime: new Date() }).files.length;
    } catch (error) {
      throw refused(error);
    }
    // A delivery names every file with its URL, plus the full manifest's when it travels as a detached pointer.
    if (fileCount + 1 > MAX_DELIVERY_FILE_URLS) {
      throw new DispatcherError('UPDATE_UNSUPPORTED', `${update.updateId} and its children have ${fileCount} files; a delivery carries at most ${MAX_DELIVERY_FILE_URLS - 1}`, { updateId: update.updateId });
    }
    const present = this.#store.insertUpdates(entries);
    if (present !== undefined) throw new DispatcherError('UPDATE_EXISTS', `${present} is in the catalog already`, { updateId: present });
    return update;
  }
}

function isImportReferenceStep(step: ImportStep): step is ImportReferenceStep {
  return step.type === 'reference';
}

/** Parses an import manifest of the request; a child's refusal says which child. */
function parsed(bytes: Buffer, at: string): ImportManifest {
  try {
    return parseImportManifest(bytes);
  } catch (error) {
    const refusal = refused(error);
    if (!at) throw refusal;
    throw new DispatcherError('UPDATE_INVALID', `${at}/importManifest: ${refusal.message}`, { ...refusal.details, field: `${at}/importManifest` });
  }
}

function refused(error: unknown): DispatcherError {
  if (isOtaError(error)) {
    return new DispatcherError('UPDATE_INVALID', error.message, { otaCode: error.code, resultCode: error.resultCode, extendedResultCode: error.extendedResultCode });
  }
  return new DispatcherError('UPDATE_INVALID', (error as Error).message);
}
