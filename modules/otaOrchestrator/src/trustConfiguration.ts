import { OtaError, TrustStore } from '@edge-ota/common';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { JsonWebKey } from 'node:crypto';
import path from 'node:path';
import type { OrchestratorConfiguration } from './configuration.ts';

// The orchestrator's trust: the root keys it is deployed with (a JSON file on a volume or in the image), Microsoft's
// ADU roots unless turned off, and the newest root key package it has accepted, which is persisted so a
// revocation survives restarts.

export function loadTrustStore(configuration: OrchestratorConfiguration): TrustStore {
  let rootKeys: Array<{ kid: string; jwk: JsonWebKey }> = [];
  if (configuration.trustRootsFile) {
    try {
      rootKeys = JSON.parse(readFileSync(configuration.trustRootsFile, 'utf8')) as typeof rootKeys;
    } catch (error) {
      throw new OtaError('KEY_FILE_INVALID', `OTA_TRUST_ROOTS_FILE ${configuration.trustRootsFile}: ${(error as Error).message}`, { cause: error });
    }
    if (!Array.isArray(rootKeys) || rootKeys.some((r) => typeof r?.kid !== 'string' || typeof r.jwk !== 'object')) {
      throw new OtaError('KEY_FILE_INVALID', `OTA_TRUST_ROOTS_FILE ${configuration.trustRootsFile}: expected [{ "kid": "...", "jwk": { ... } }]`);
    }
  }
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
