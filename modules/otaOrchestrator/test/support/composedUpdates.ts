import type { FullUpdateManifest, InlineStep, UpdateDelivery, UpdateFile } from '@edge-ota/common';
import { randomUUID } from 'node:crypto';
import type { ArtifactServer } from './artifactServer.ts';
import type { Publisher } from './signedUpdates.ts';
import { compatibleProperties, sha256Base64 } from './signedUpdates.ts';

// Composed updates (ADU reference steps) for engine tests: a parent update manifest whose reference steps point
// at child update manifests, written with explicit file ids (unique across parent and children, as ADU's service
// issues them), signed by the test publisher. Every file, the children's manifests included, is put on the
// artifact server under `<file id>/<file name>`, so two manifests may use the same file name.

export interface PayloadFile {
  id: string;
  name: string;
  data: Buffer;
}

/** A child update manifest as it is served, with the payload files its steps name. */
export interface ChildDocument {
  /** The parent's file id for the child manifest. */
  id: string;
  name: string;
  bytes: Buffer;
  files: PayloadFile[];
}

export interface ChildSpec {
  id: string;
  name: string;
  /** updateId.name of the child (provider is Contoso). */
  update: string;
  version: string;
  compatibility?: Array<Record<string, string>>;
  steps: InlineStep[];
  files: PayloadFile[];
}

export interface ComposedSpec {
  version: string;
  files?: PayloadFile[];
  /** Inline steps of the parent, and children standing for reference steps. */
  steps: Array<InlineStep | ChildDocument>;
  jobId?: string;
  /** File ids left out of fileUrls. */
  withoutUrls?: string[];
}

export function fileEntry(file: { name: string; data: Buffer }): UpdateFile {
  return { filename: file.name, sizeInBytes: file.data.length, hashes: { sha256: sha256Base64(file.data) } };
}

/** Where the artifact server keeps a file of a composed update. */
export function servedPath(file: { id: string; name: string }): string {
  return `${file.id}/${file.name}`;
}

/** A child document from any content: a manifest object (well-formed or not) or raw bytes. */
export function childDocument(id: string, name: string, content: object | Buffer, files: PayloadFile[] = []): ChildDocument {
  return { id, name, bytes: Buffer.isBuffer(content) ? content : Buffer.from(JSON.stringify(content), 'utf8'), files };
}

export function childManifest(spec: Omit<ChildSpec, 'id' | 'name'>): FullUpdateManifest {
  return {
    manifestVersion: '4',
    updateId: { provider: 'Contoso', name: spec.update, version: spec.version },
    compatibility: spec.compatibility ?? [compatibleProperties],
    instructions: { steps: spec.steps },
    files: Object.fromEntries(spec.files.map((f) => [f.id, fileEntry(f)])),
    createdDateTime: new Date(Date.now() - 60_000).toISOString(),
  };
}

export function childUpdate(spec: ChildSpec): ChildDocument {
  return childDocument(spec.id, spec.name, childManifest(spec), spec.files);
}

function isChild(step: InlineStep | ChildDocument): step is ChildDocument {
  return 'bytes' in step;
}

/** Signs the parent, serves every file, and returns the delivery the dispatcher would send. */
export function composedDelivery(publisher: Publisher, server: ArtifactServer, spec: ComposedSpec): UpdateDelivery {
  const payload = spec.files ?? [];
  const children = spec.steps.filter(isChild);
  const manifest: FullUpdateManifest = {
    manifestVersion: '4',
    updateId: { provider: 'Contoso', name: 'Composed', version: spec.version },
    compatibility: [compatibleProperties],
    instructions: { steps: spec.steps.map((step) => (isChild(step) ? { type: 'reference', detachedManifestFileId: step.id } : step)) },
    files: Object.fromEntries([
      ...payload.map((f) => [f.id, fileEntry(f)] as const),
      ...children.map((c) => [c.id, fileEntry({ name: c.name, data: c.bytes })] as const),
    ]),
    createdDateTime: new Date(Date.now() - 60_000).toISOString(),
    edgeOta: { manifestId: randomUUID(), expiresDateTime: new Date(Date.now() + 3600_000).toISOString() },
  };
  const served = [...payload, ...children.map((c) => ({ id: c.id, name: c.name, data: c.bytes })), ...children.flatMap((c) => c.files)];
  const fileUrls: Record<string, string> = {};
  for (const file of served) {
    server.put(servedPath(file), file.data);
    if (!spec.withoutUrls?.includes(file.id)) fileUrls[file.id] = `${server.baseUrl}/files/${servedPath(file)}`;
  }
  return publisher.deliverSigned(Buffer.from(JSON.stringify(manifest), 'utf8'), fileUrls, spec.jobId ? { jobId: spec.jobId } : {});
}
