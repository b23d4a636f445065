import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT_PUBLIC_KIND, SIGNING_KEY_KIND, createSigningKey, generateKeyPair, publicJwk } from '@edge-ota/common';

// For local runs only: a throw-away test root and a signing key it certifies, in the files `ota keys` writes
// (read back with @edge-ota/common's readSigningKeyFileSync / readRootPublicKeyFileSync).

/** Writes a test root and a signing key it certifies, in the CLI's file format; returns their paths. */
export function writeTestKeys(dir: string, prefix = 'dispatcher-test'): { signingKeyFile: string; rootPublicFile: string; created: boolean } {
  const signingKeyFile = path.join(dir, `${prefix}.signing.key.json`);
  const rootPublicFile = path.join(dir, `${prefix}.root.pub.json`);
  if (existsSync(signingKeyFile) && existsSync(rootPublicFile)) return { signingKeyFile, rootPublicFile, created: false };
  const rootKid = `${prefix}.root`;
  const root = generateKeyPair('RS256', 2048);
  const signing = createSigningKey({ kid: `${prefix}.signing`, alg: 'ES256', rootKid, rootPrivateKey: root.privateKey });
  writeFileSync(rootPublicFile, `${JSON.stringify({ kind: ROOT_PUBLIC_KIND, kid: rootKid, jwk: publicJwk(root.publicKey) }, null, 2)}\n`);
  writeFileSync(signingKeyFile, `${JSON.stringify({
    kind: SIGNING_KEY_KIND, kid: signing.kid, alg: signing.alg, privateJwk: signing.privateKey.export({ format: 'jwk' }), sjwk: signing.sjwk,
  }, null, 2)}\n`, { mode: 0o600 });
  return { signingKeyFile, rootPublicFile, created: true };
}
