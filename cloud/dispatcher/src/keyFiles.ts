import { createPrivateKey } from 'node:crypto';
import type { JsonWebKey } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { SigningKey, SigningAlgorithm } from '@edge-ota/common';
import { createSigningKey, generateKeyPair, publicJwk } from '@edge-ota/common';

// Reads the key files the `ota keys` CLI writes (modules/common/docs/signed-updates.md, section 2): a signing
// key (`<kid>.signing.key.json`, kind edge-ota.signing-key) and root public keys (`<kid>.root.pub.json`, or the
// root's private file, whose public half is used). For local runs only, creates a throw-away test root and
// signing key in the data directory.

export interface RootPublicKey {
  kid: string;
  jwk: JsonWebKey;
}

function readKind(file: string, kinds: string[]): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`${file}: not a readable JSON key file (${(error as Error).message})`);
  }
  const kind = (value as { kind?: unknown } | null)?.kind;
  if (typeof kind !== 'string' || !kinds.includes(kind)) throw new Error(`${file}: expected a ${kinds.join(' or ')} file`);
  return value as Record<string, unknown>;
}

export function readSigningKeyFile(file: string): SigningKey {
  const value = readKind(file, ['edge-ota.signing-key']);
  if (typeof value.sjwk !== 'string') throw new Error(`${file}: has no sjwk`);
  return { kid: String(value.kid), alg: value.alg as SigningAlgorithm, privateKey: createPrivateKey({ key: value.privateJwk as JsonWebKey, format: 'jwk' }), sjwk: value.sjwk };
}

export function readRootPublicFile(file: string): RootPublicKey {
  const value = readKind(file, ['edge-ota.root-public-key', 'edge-ota.root-key']);
  if (value.kind === 'edge-ota.root-key') {
    return { kid: String(value.kid), jwk: publicJwk(createPrivateKey({ key: value.privateJwk as JsonWebKey, format: 'jwk' })) };
  }
  return { kid: String(value.kid), jwk: value.jwk as JsonWebKey };
}

/** Writes a test root and a signing key it certifies, in the CLI's file format; returns their paths. */
export function writeTestKeys(dir: string, prefix = 'dispatcher-test'): { signingKeyFile: string; rootPublicFile: string; created: boolean } {
  const signingKeyFile = path.join(dir, `${prefix}.signing.key.json`);
  const rootPublicFile = path.join(dir, `${prefix}.root.pub.json`);
  if (existsSync(signingKeyFile) && existsSync(rootPublicFile)) return { signingKeyFile, rootPublicFile, created: false };
  const rootKid = `${prefix}.root`;
  const root = generateKeyPair('RS256', 2048);
  const signing = createSigningKey({ kid: `${prefix}.signing`, alg: 'ES256', rootKid, rootPrivateKey: root.privateKey });
  writeFileSync(rootPublicFile, `${JSON.stringify({ kind: 'edge-ota.root-public-key', kid: rootKid, jwk: publicJwk(root.publicKey) }, null, 2)}\n`);
  writeFileSync(signingKeyFile, `${JSON.stringify({
    kind: 'edge-ota.signing-key', kid: signing.kid, alg: signing.alg, privateJwk: signing.privateKey.export({ format: 'jwk' }), sjwk: signing.sjwk,
  }, null, 2)}\n`, { mode: 0o600 });
  return { signingKeyFile, rootPublicFile, created: true };
}
