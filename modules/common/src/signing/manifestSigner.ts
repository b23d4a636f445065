import { createHash } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { algorithmsForKey, generateKeyPair, publicJwk, signingKeyHash } from './keys.ts';
import type { SigningAlgorithm } from './keys.ts';
import { signCompactJws } from './jws.ts';

/** A signing key with its certificate: the public JWK signed by a root (the `sjwk` that goes in every JWS header). */
export interface SigningKey {
  kid: string;
  alg: SigningAlgorithm;
  privateKey: KeyObject;
  sjwk: string;
}

export interface SigningKeyRequest {
  kid: string;
  alg: SigningAlgorithm;
  rootKid: string;
  rootPrivateKey: KeyObject;
  /** Modulus size when alg is RS256 (ADU uses 3072). */
  rsaBits?: number;
}

export function createSigningKey(request: SigningKeyRequest): SigningKey {
  const { privateKey } = generateKeyPair(request.alg, request.rsaBits);
  return { kid: request.kid, alg: request.alg, privateKey, sjwk: certifySigningKey(privateKey, request) };
}

/** Signs an existing key's public half with a root: used to re-certify a key under a new root after rotation. */
export function certifySigningKey(key: KeyObject, request: Omit<SigningKeyRequest, 'rsaBits'>): string {
  const [rootAlg] = algorithmsForKey(request.rootPrivateKey);
  if (rootAlg === undefined) throw new Error('root key type cannot sign');
  const jwk = { ...publicJwk(key), alg: request.alg, kid: request.kid };
  return signCompactJws({ kid: request.rootKid }, Buffer.from(JSON.stringify(jwk), 'utf8'), request.rootPrivateKey, rootAlg);
}

export function manifestDigest(manifestBytes: Uint8Array): string {
  return createHash('sha256').update(manifestBytes).digest('base64');
}

/**
 * ADU's update manifest signature: a compact JWS whose payload is {"sha256": base64(sha256(manifest bytes))} and
 * whose header carries the signing key certificate. The manifest bytes must be sent exactly as signed.
 */
export function signUpdateManifest(manifestBytes: Uint8Array, signingKey: SigningKey): string {
  const payload = JSON.stringify({ sha256: manifestDigest(manifestBytes) });
  return signCompactJws({ sjwk: signingKey.sjwk }, Buffer.from(payload, 'utf8'), signingKey.privateKey, signingKey.alg);
}

export { signingKeyHash };
