import { createHash } from 'node:crypto';
import type { SigningKey, UpdateDelivery } from '@edge-ota/common';
import { MAX_METHOD_PAYLOAD_BYTES, WORKFLOW_PROCESS_DEPLOYMENT, fitsInTwin, signUpdateManifest } from '@edge-ota/common';
import type { ArtifactStore } from './artifactStore.ts';
import type { CatalogUpdate } from './store.ts';
import { composeUpdateManifests } from './updateManifests.ts';

// Turns a catalog update into what a gateway's orchestrator receives: a freshly signed update manifest (own
// manifest id and expiry per deployment, so a device's replay guard sees each deployment once) with a signed,
// expiring URL for every file, the files of the child updates its reference steps install and their update
// manifests included (those are artifacts like any file). When the whole delivery is too big for a direct method
// or a twin, the manifest itself becomes a file and a small signed pointer (ADU's detached manifest) travels instead.

export const DETACHED_MANIFEST_FILE_ID = 'manifest';
/** Leaves room in the 32 KB desired section for other properties of the orchestrator's twin. */
const MAX_TWIN_DELIVERY_BYTES = 24 * 1024;

export interface BuiltDelivery {
  jobId: string;
  /** Sent by direct method: the full manifest when it fits, the pointer otherwise. */
  method: UpdateDelivery;
  /** Written to the module twin: the full manifest when every value fits 4 KB, the pointer otherwise. */
  twin: UpdateDelivery;
}

export interface ManifestBuilderOptions {
  signingKey: SigningKey;
  artifacts: ArtifactStore;
  manifestLifetimeMs?: number;
  urlLifetimeMs?: number;
}

/**
 * One job id per (device, update, assignment revision): a redelivered job is the same job to the orchestrator, and
 * a device reassigned to an update it had before gets a new one. Revision 0 (never reassigned) keeps the id of
 * (device, update) alone.
 */
export function jobIdFor(deviceId: string, updateId: string, assignmentRevision = 0): string {
  const key = assignmentRevision === 0 ? `${deviceId}\n${updateId}` : `${deviceId}\n${updateId}\n#${assignmentRevision}`;
  return `job-${createHash('sha256').update(key).digest('hex').slice(0, 40)}`;
}

export class ManifestBuilder {
  readonly #options: Required<ManifestBuilderOptions>;

  constructor(options: ManifestBuilderOptions) {
    this.#options = { manifestLifetimeMs: 30 * 24 * 3600_000, urlLifetimeMs: 30 * 24 * 3600_000, ...options };
  }

  /**
   * `rollback`: the update is older than what the device runs, and going back to it is intended (its policy allows it).
   * `children`: the catalog entries the update's reference steps name (Catalog.childrenOf), none for most updates.
   */
  async build(
    update: CatalogUpdate, target: { deviceId: string; gatewayId: string; assignmentRevision?: number; rollback?: boolean }, children: readonly CatalogUpdate[] = [], now = new Date(),
  ): Promise<BuiltDelivery> {
    const { signingKey, artifacts } = this.#options;
    const jobId = jobIdFor(target.deviceId, update.updateId, target.assignmentRevision);
    const expires = new Date(now.getTime() + this.#options.manifestLifetimeMs);
    const urlExpiry = new Date(now.getTime() + this.#options.urlLifetimeMs);
    const { manifest, bytes, files } = composeUpdateManifests(update, children, {
      expiresDateTime: expires, manifestId: jobId, createdDateTime: now, ...(target.rollback ? { rollback: true } : {}),
    });
    const fileUrls: Record<string, string> = {};
    for (const file of files) {
      // A child's manifest has the same bytes in every job (no per-job fields), so it is stored once and cached once.
      const artifactKey = file.source.kind === 'artifact' ? file.source.artifactKey : (await artifacts.put(file.source.bytes)).key;
      fileUrls[file.fileId] = artifacts.signedUrl(artifactKey, file.filename, urlExpiry);
    }
    const deliveryTarget = { deviceId: target.deviceId };
    const full: UpdateDelivery = {
      workflow: { action: WORKFLOW_PROCESS_DEPLOYMENT, id: jobId },
      updateManifest: bytes.toString('utf8'),
      updateManifestSignature: signUpdateManifest(bytes, signingKey),
      fileUrls,
      target: deliveryTarget,
    };
    const fullSize = Buffer.byteLength(JSON.stringify(full));
    const needsPointer = fullSize > MAX_METHOD_PAYLOAD_BYTES || !fitsInTwin(full) || fullSize > MAX_TWIN_DELIVERY_BYTES;
    if (!needsPointer) return { jobId, method: full, twin: full };

    // The detached manifest is content-addressed like any file; the pointer's signature covers its hash.
    const detached = await artifacts.put(bytes);
    const pointer = {
      manifestVersion: manifest.manifestVersion,
      updateId: manifest.updateId,
      detachedManifestFileId: DETACHED_MANIFEST_FILE_ID,
      files: { [DETACHED_MANIFEST_FILE_ID]: { filename: 'updatemanifest.json', sizeInBytes: detached.sizeInBytes, hashes: { sha256: detached.sha256 } } },
      createdDateTime: manifest.createdDateTime,
      edgeOta: manifest.edgeOta,
    };
    const pointerBytes = Buffer.from(JSON.stringify(pointer), 'utf8');
    const pointerDelivery: UpdateDelivery = {
      workflow: { action: WORKFLOW_PROCESS_DEPLOYMENT, id: jobId },
      updateManifest: pointerBytes.toString('utf8'),
      updateManifestSignature: signUpdateManifest(pointerBytes, signingKey),
      fileUrls: { [DETACHED_MANIFEST_FILE_ID]: artifacts.signedUrl(detached.key, 'updatemanifest.json', urlExpiry), ...fileUrls },
      target: deliveryTarget,
    };
    return { jobId, method: fullSize > MAX_METHOD_PAYLOAD_BYTES ? pointerDelivery : full, twin: pointerDelivery };
  }
}
