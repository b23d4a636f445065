import { TrustStore, createSigningKey, generateKeyPair, parseImportManifest, publicJwk, signUpdateManifest, updateManifestFromImport } from '@edge-ota/common';
import type { SigningKey, UpdateDelivery } from '@edge-ota/common';
import { createHash, randomUUID } from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';

// A test publisher: an offline root, a signing key it certified, and deliveries built the way the dispatcher
// builds them (ADU import manifest -> signed update manifest + file URLs).

export interface Publisher {
  trustStore(): TrustStore;
  rootKid: string;
  /** The root as an orchestrator's OTA_TRUST_ROOTS_FILE lists it. */
  rootDescription: { kid: string; jwk: JsonWebKey };
  deliver(update: UpdateSpec, options?: DeliveryOptions): UpdateDelivery;
  /** A delivery of manifest bytes built by the test itself (composed updates), signed as they are. */
  deliverSigned(manifestBytes: Buffer, fileUrls: Record<string, string>, options?: { jobId?: string }): UpdateDelivery;
  /** A one-file, one-step update for a file known only by hash and size (large benchmark files). */
  deliverDeclared(file: { version: string; fileName: string; sha256: string; sizeInBytes: number; handler: string }, url: string): UpdateDelivery;
}

export interface StepSpec {
  handler: string;
  files: string[];
  handlerProperties?: Record<string, unknown>;
}

export interface UpdateSpec {
  version: string;
  name?: string;
  files: Record<string, Buffer>;
  steps: StepSpec[];
  compatibility?: Array<Record<string, string>>;
  rollback?: boolean;
}

export interface DeliveryOptions {
  jobId?: string;
  targetId?: string;
  baseUrl: string;
  expires?: Date;
  manifestId?: string;
}

export const compatibleProperties = { deviceManufacturer: 'Contoso', deviceModel: 'Gateway' };

export function sha256Base64(data: Buffer): string {
  return createHash('sha256').update(data).digest('base64');
}

export function createPublisher(): Publisher {
  const root = generateKeyPair('ES256');
  const rootKid = `test-root-${randomUUID().slice(0, 8)}`;
  const signingKey: SigningKey = createSigningKey({ kid: 'test-signer', alg: 'EdDSA', rootKid, rootPrivateKey: root.privateKey });
  const sign = (importManifest: ReturnType<typeof parseImportManifest>, options?: DeliveryOptions & { rollback?: boolean }) => {
    const { manifest, bytes } = updateManifestFromImport(importManifest, {
      expiresDateTime: options?.expires ?? new Date(Date.now() + 3600_000),
      ...(options?.rollback ? { rollback: true } : {}),
      ...(options?.manifestId ? { manifestId: options.manifestId } : {}),
    });
    return { manifest, bytes, signature: signUpdateManifest(bytes, signingKey) };
  };
  return {
    deliverSigned(manifestBytes, fileUrls, options) {
      return {
        workflow: { action: 3, id: options?.jobId ?? `job-${randomUUID().slice(0, 8)}` },
        updateManifest: manifestBytes.toString('utf8'),
        updateManifestSignature: signUpdateManifest(manifestBytes, signingKey),
        fileUrls,
      };
    },
    deliverDeclared(file, url) {
      const { manifest, bytes, signature } = sign(parseImportManifest({
        updateId: { provider: 'Contoso', name: 'Bench', version: file.version },
        compatibility: [compatibleProperties],
        instructions: { steps: [{ handler: file.handler, files: [file.fileName] }] },
        files: [{ filename: file.fileName, sizeInBytes: file.sizeInBytes, hashes: { sha256: file.sha256 } }],
        manifestVersion: '5.0',
        createdDateTime: new Date(Date.now() - 60_000).toISOString(),
      }));
      const fileId = Object.keys(manifest.files)[0] ?? '';
      return { workflow: { action: 3, id: `bench-${randomUUID().slice(0, 8)}` }, updateManifest: bytes.toString('utf8'), updateManifestSignature: signature, fileUrls: { [fileId]: url } };
    },
    rootKid,
    rootDescription: { kid: rootKid, jwk: publicJwk(root.publicKey) },
    trustStore: () => new TrustStore({ rootKeys: [{ kid: rootKid, jwk: publicJwk(root.publicKey) }], aduServiceRoots: false }),
    deliver(update, options) {
      const importManifest = parseImportManifest({
        updateId: { provider: 'Contoso', name: update.name ?? 'GatewayApp', version: update.version },
        compatibility: update.compatibility ?? [compatibleProperties],
        instructions: { steps: update.steps.map((s) => ({ handler: s.handler, files: s.files, ...(s.handlerProperties ? { handlerProperties: s.handlerProperties } : {}) })) },
        files: Object.entries(update.files).map(([filename, data]) => ({ filename, sizeInBytes: data.length, hashes: { sha256: sha256Base64(data) } })),
        manifestVersion: '5.0',
        createdDateTime: new Date(Date.now() - 60_000).toISOString(),
      });
      const { manifest, bytes, signature } = sign(importManifest, { ...options, baseUrl: options?.baseUrl ?? '', ...(update.rollback ? { rollback: true } : {}) });
      const fileUrls: Record<string, string> = {};
      for (const [fileId, entry] of Object.entries(manifest.files)) fileUrls[fileId] = `${options?.baseUrl ?? 'http://127.0.0.1:9'}/files/${entry.filename}`;
      return {
        workflow: { action: 3, id: options?.jobId ?? `job-${randomUUID().slice(0, 8)}` },
        updateManifest: bytes.toString('utf8'),
        updateManifestSignature: signature,
        fileUrls,
        ...(options?.targetId ? { target: { deviceId: options.targetId } } : {}),
      };
    },
  };
}
