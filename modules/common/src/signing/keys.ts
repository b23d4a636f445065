import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import type { JsonWebKey, KeyObject } from 'node:crypto';
import { OtaError } from '../errors.ts';
import type { ResultCodeName } from '../resultCodes.ts';
import { isPlainObject } from '../encoding.ts';

/**
 * JWS algorithms we sign and verify. RS256 is ADU's (and the only one its root key package schema allows for root
 * keys); ES256 and EdDSA give signing keys and signatures a tenth of the size, which matters in a 4 KB twin value.
 */
export const JWS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'ES256', 'EdDSA'] as const;
export type JwsAlgorithm = (typeof JWS_ALGORITHMS)[number];
export const SIGNING_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'] as const satisfies readonly JwsAlgorithm[];
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

export function isJwsAlgorithm(value: unknown): value is JwsAlgorithm {
  return typeof value === 'string' && (JWS_ALGORITHMS as readonly string[]).includes(value);
}

/** Below 2048 bits RSA is breakable by a motivated attacker within a device's service life. */
export const MIN_RSA_BITS = 2048;

export function generateKeyPair(alg: SigningAlgorithm, rsaBits = 3072): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (alg) {
    case 'RS256':
      return generateKeyPairSync('rsa', { modulusLength: rsaBits, publicExponent: 0x10001 });
    case 'ES256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'EdDSA':
      return generateKeyPairSync('ed25519');
  }
}

/** The algorithms a key may be used with: binding alg to key type stops alg-substitution tricks. */
export function algorithmsForKey(key: KeyObject): readonly JwsAlgorithm[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return ['RS256', 'RS384', 'RS512'];
    case 'ec':
      return key.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? ['ES256'] : [];
    case 'ed25519':
      return ['EdDSA'];
    default:
      return [];
  }
}

/** Minimal public JWK (no private members, members in a fixed order so the JSON is reproducible). */
export function publicJwk(key: KeyObject): JsonWebKey {
  const jwk = (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'jwk' });
  if (jwk.kty === 'RSA') return { kty: 'RSA', n: jwk.n, e: jwk.e };
  if (jwk.kty === 'EC') return { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y };
  return { kty: 'OKP', crv: jwk.crv, x: jwk.x };
}

/** Imports a public JWK and refuses anything but RSA >= 2048, P-256 and Ed25519. */
export function importPublicJwk(value: unknown, what: string, code: ResultCodeName): KeyObject {
  if (!isPlainObject(value)) throw new OtaError(code, `${what}: JWK must be an object`, { field: what });
  if ('d' in value || 'p' in value) throw new OtaError(code, `${what}: JWK carries private key material`, { field: what });
  const { kty, crv } = value;
  const ok = kty === 'RSA' || (kty === 'EC' && crv === 'P-256') || (kty === 'OKP' && crv === 'Ed25519');
  if (!ok) throw new OtaError(code, `${what}: key type ${String(kty)}/${String(crv)} is not RSA, EC P-256 or OKP Ed25519`, { field: what });
  let key: KeyObject;
  try {
    key = createPublicKey({ key: value as JsonWebKey, format: 'jwk' });
  } catch (cause) {
    throw new OtaError(code, `${what}: JWK does not describe a usable public key (${(cause as Error).message})`, { field: what, cause });
  }
  const bits = key.asymmetricKeyDetails?.modulusLength;
  if (kty === 'RSA' && (bits === undefined || bits < MIN_RSA_BITS)) {
    throw new OtaError(code, `${what}: RSA key of ${bits} bits is below the ${MIN_RSA_BITS} bit minimum`, { field: what });
  }
  return key;
}

/**
 * A signing key's identity in a root key package's disabledSigningKeys: SHA-256 of its DER SubjectPublicKeyInfo,
 * as ADU computes it. Returned as base64url; comparisons decode, so either base64 flavour matches.
 */
export function signingKeyHash(key: KeyObject): string {
  const spki = (key.type === 'private' ? createPublicKey(key) : key).export({ format: 'der', type: 'spki' });
  return createHash('sha256').update(spki).digest('base64url');
}
