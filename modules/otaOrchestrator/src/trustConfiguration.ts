import { OtaError, TrustStore } from '@edge-ota/common';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { JsonWebKey } from 'node:crypto';
import path from 'node:path';
import type { OrchestratorConfiguration } from './configuration.ts';

// The orchestrator's trust: the root keys it is deployed with (a JSON file on a volume or in the image), Microsoft's
// ADU roots unless turned off, and the newest root key package it has accepted, which is persisted so a
// revocation survives restarts.

const rootPublicKind = 'edge-ota.root-public-key';

type RootDescription = { kid: string; jwk: JsonWebKey };

/**
 * Reads the trusted roots: one or several files (`:`-separated), each either a root public key file as
 * `ota keys create-root` and the dispatcher write it (`{ "kind": "edge-ota.root-public-key", "kid", "jwk" }`)
 * or a JSON list of such entries or of plain `{ "kid", "jwk" }`.
 */
export function readTrustedRoots(files: string): RootDescription[] {
  const roots: RootDescription[] = [];
  for (const file of files.split(':').filter(Boolean)) {
    let value: unknown;
    try {
      value = JSON.parse(readFileSync(file, 'utf8'));
    } catch (error) {
      throw new OtaError('KEY_FILE_INVALID', `OTA_TRUST_ROOTS_FILE ${file}: ${(error as Error).message}`, { cause: error });
    }
    for (const entry of Array.isArray(value) ? value : [value]) {
      const candidate = entry as { kind?: unknown; kid?: unknown; jwk?: unknown } | null;
      const kindOk = candidate?.kind === undefined || candidate.kind === rootPublicKind;
      if (!kindOk || typeof candidate?.kid !== 'string' || typeof candidate.jwk !== 'object' || candidate.jwk === null) {
        throw new OtaError('KEY_FILE_INVALID', `OTA_TRUST_ROOTS_FILE ${file}: expected root public keys ({ "kid", "jwk" }, as ota keys create-root writes them)`);
      }
      roots.push({ kid: candidate.kid, jwk: candidate.jwk as JsonWebKey });
    }
  }
  return roots;
}

export function loadTrustStore(configuration: OrchestratorConfiguration): TrustStore {
  const rootKeys = configuration.trustRootsFile ? readTrustedRoots(configuration.trustRootsFile) : [];
  const packageFile = rootKeyPackageFile(configuration);
  return new TrustStore({
    rootKeys,
    aduServiceRoots: configuration.trustAduServiceRoots,
    ...(existsSync(packageFile) ? { rootKeyPackage: readFileSync(packageFile, 'utf8') } : {}),
  });
}

export function rootKeyPackageFile(configuration: OrchestratorConfiguration): string {
  return path.join(configuration.stateDir, 'rootKeyPackage.json');
}

/** Persists the package the trust store holds now (atomically), after it accepted a newer one. */
export function persistRootKeyPackage(configuration: OrchestratorConfiguration, trustStore: TrustStore): void {
  const json = trustStore.rootKeyPackageJson;
  if (!json) return;
  const file = rootKeyPackageFile(configuration);
  writeFileSync(`${file}.tmp`, json);
  renameSync(`${file}.tmp`, file);
}
