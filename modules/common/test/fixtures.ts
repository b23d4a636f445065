// Keys and manifests shared by the tests. RSA key generation is slow, so each test file builds its world once.
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  TrustStore,
  createSigningKey,
  generateKeyPair,
  publicJwk,
  signUpdateManifest,
  updateManifestFromImport,
  parseImportManifest,
} from '../src/index.ts';
import type { ResultCodeName, SigningAlgorithm, SigningKey } from '../src/index.ts';
import { expect } from 'vitest';

export interface Root {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function makeRoot(kid: string): Root {
  const { privateKey, publicKey } = generateKeyPair('RS256', 2048);
  return { kid, privateKey, publicKey };
}

export function rootDescription(root: Root): { kid: string; jwk: ReturnType<typeof publicJwk> } {
  return { kid: root.kid, jwk: publicJwk(root.publicKey) };
}

export function makeSigningKey(root: Root, alg: SigningAlgorithm, kid = `signer-${alg}`): SigningKey {
  return createSigningKey({ kid, alg, rootKid: root.kid, rootPrivateKey: root.privateKey, rsaBits: 2048 });
}

export function trustStoreFor(...roots: Root[]): TrustStore {
  return new TrustStore({ rootKeys: roots.map(rootDescription), aduServiceRoots: false });
}

export function tempDir(prefix = 'edge-ota-test-'): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

export function sha256b64(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('base64');
}

export interface PayloadFile {
  filename: string;
  data: Buffer;
  path: string;
}

/** Writes payload files into `dir` and returns an import manifest describing them. */
export function importManifestFor(dir: string, files: { filename: string; size: number }[], version = '1.2.0') {
  const payload: PayloadFile[] = files.map(({ filename, size }) => {
    const data = randomBytes(size);
    const filePath = path.join(dir, filename);
    writeFileSync(filePath, data);
    return { filename, data, path: filePath };
  });
  const importManifest = {
    updateId: { provider: 'Contoso', name: 'Toaster', version },
    compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Toaster' }],
    instructions: {
      steps: [{ handler: 'microsoft/script:1', files: payload.map((f) => f.filename), handlerProperties: { installedCriteria: version } }],
    },
    files: payload.map((f) => ({ filename: f.filename, sizeInBytes: f.data.length, hashes: { sha256: sha256b64(f.data) } })),
    manifestVersion: '5.0',
    createdDateTime: '2026-01-02T03:04:05.1234567Z',
  };
  return { importManifest, payload };
}

export const HOUR = 3600_000;
export const NOW = new Date('2026-06-01T00:00:00Z');

export function signedManifest(
  signingKey: SigningKey,
  overrides: { version?: string; expires?: Date; rollback?: boolean; manifestId?: string; minimumVersion?: string } = {},
  files: { filename: string; size: number }[] = [{ filename: 'app.bin', size: 100 }],
) {
  const dir = tempDir();
  const { importManifest, payload } = importManifestFor(dir, files, overrides.version);
  const { manifest, bytes } = updateManifestFromImport(parseImportManifest(importManifest), {
    expiresDateTime: overrides.expires ?? new Date(NOW.getTime() + 24 * HOUR),
    createdDateTime: new Date(NOW.getTime() - HOUR),
    ...(overrides.rollback ? { rollback: true } : {}),
    ...(overrides.manifestId ? { manifestId: overrides.manifestId } : {}),
    ...(overrides.minimumVersion ? { minimumVersion: overrides.minimumVersion } : {}),
  });
  return { dir, payload, manifest, bytes, signature: signUpdateManifest(bytes, signingKey) };
}

export function publicKeyOf(key: KeyObject): KeyObject {
  return createPublicKey(key);
}

/** Asserts that `fn` throws an OtaError with this code (and a message matching `message`). */
export function expectCode(fn: () => unknown, code: ResultCodeName, message?: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect((caught as { code?: string } | undefined)?.code, `expected ${code}, got ${String(caught)}`).toBe(code);
  if (message) expect((caught as Error).message).toMatch(message);
}
