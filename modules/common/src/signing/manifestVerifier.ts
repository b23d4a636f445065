import { timingSafeEqual } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { OtaError } from '../errors.ts';
import { decodeAnyBase64, isPlainObject } from '../encoding.ts';
import { parseUpdateManifest } from '../manifest/updateManifest.ts';
import type { UpdateManifest } from '../manifest/types.ts';
import { decodeCompactJws, verifyJwsSignature } from './jws.ts';
import type { JwsAlgorithm } from './keys.ts';
import { importPublicJwk, signingKeyHash } from './keys.ts';
import { manifestDigest } from './manifestSigner.ts';
import type { TrustStore } from './trustStore.ts';

export interface VerifiedUpdateManifest {
  manifest: UpdateManifest;
  /** The exact bytes the signature covers: store and forward these, never a re-serialization. */
  manifestBytes: Buffer;
  rootKid: string;
  signingKey: { kid: string | undefined; alg: JwsAlgorithm; hash: string; publicKey: KeyObject };
}

// Names of the chain's links, used in every rejection so a status view can say where trust broke.
const LINK_JWS = 'manifest signature';
const LINK_SJWK = 'manifest signature header sjwk';

/**
 * Walks the chain root -> signing key -> manifest signature -> manifest bytes, then parses the manifest.
 * Each failure is its own result code and message. Policy (expiry, replay, compatibility, version) is separate:
 * see `checkUpdatePolicy`.
 */
export function verifyUpdateManifest(manifest: string | Uint8Array, signature: string, trustStore: TrustStore): VerifiedUpdateManifest {
  const manifestBytes = typeof manifest === 'string' ? Buffer.from(manifest, 'utf8') : Buffer.from(manifest);
  const jws = decodeCompactJws(signature, LINK_JWS, 'SIGNATURE_MALFORMED');
  const sjwk = jws.header.sjwk;
  if (typeof sjwk !== 'string' || sjwk.length === 0) {
    throw new OtaError('SIGNING_KEY_MISSING', `${LINK_JWS}: header has no "sjwk" string`, { field: `${LINK_JWS}.sjwk` });
  }
  // Link 1: the signing key certificate, signed by a root the store trusts.
  const certificate = decodeCompactJws(sjwk, LINK_SJWK, 'SIGNING_KEY_MALFORMED');
  const rootKid = certificate.header.kid;
  if (typeof rootKid !== 'string' || rootKid.length === 0) {
    throw new OtaError('SIGNING_KEY_MALFORMED', `${LINK_SJWK}: header has no root key "kid"`, { field: `${LINK_SJWK}.kid` });
  }
  const rootKey = trustStore.resolveRootKey(rootKid, LINK_SJWK);
  verifyJwsSignature(certificate, rootKey, `${LINK_SJWK} (signed by root ${rootKid})`, 'SIGNING_KEY_SIGNATURE_INVALID');
  // Link 2: the signing key itself, and whether it has been revoked.
  let jwk: unknown;
  try {
    jwk = JSON.parse(certificate.payload.toString('utf8'));
  } catch {
    throw new OtaError('SIGNING_KEY_MALFORMED', `${LINK_SJWK}: payload is not a JSON JWK`, { field: LINK_SJWK });
  }
  const signingKeyObject = importPublicJwk(jwk, `${LINK_SJWK} payload`, 'SIGNING_KEY_MALFORMED');
  const jwkRecord = jwk as Record<string, unknown>;
  if (jwkRecord.alg !== undefined && jwkRecord.alg !== jws.alg) {
    throw new OtaError('SIGNATURE_ALGORITHM_UNSUPPORTED', `${LINK_JWS}: alg ${jws.alg} differs from the signing key's alg ${JSON.stringify(jwkRecord.alg)}`, {
      field: `${LINK_JWS}.alg`,
    });
  }
  const hash = signingKeyHash(signingKeyObject);
  const kid = typeof jwkRecord.kid === 'string' ? jwkRecord.kid : undefined;
  if (trustStore.isSigningKeyDisabled(signingKeyObject)) {
    throw new OtaError('SIGNING_KEY_DISABLED', `${LINK_SJWK}: signing key ${kid ?? '(no kid)'} (sha256 ${hash}) is disabled by root key package version ${trustStore.rootKeyPackageVersion}`, {
      field: LINK_SJWK,
    });
  }
  // Link 3: the manifest signature by the signing key.
  verifyJwsSignature(jws, signingKeyObject, `${LINK_JWS} (signed by ${kid ?? 'signing key'})`, 'SIGNATURE_INVALID');
  // Link 4: the signed digest against the exact manifest bytes.
  let payload: unknown;
  try {
    payload = JSON.parse(jws.payload.toString('utf8'));
  } catch {
    throw new OtaError('SIGNATURE_MALFORMED', `${LINK_JWS}: payload is not JSON`, { field: `${LINK_JWS}.payload` });
  }
  const signedDigest = isPlainObject(payload) && typeof payload.sha256 === 'string' ? decodeAnyBase64(payload.sha256) : undefined;
  if (!signedDigest || signedDigest.length !== 32) {
    throw new OtaError('SIGNATURE_MALFORMED', `${LINK_JWS}: payload must be {"sha256": <32 bytes in base64>}`, { field: `${LINK_JWS}.payload.sha256` });
  }
  const actual = Buffer.from(manifestDigest(manifestBytes), 'base64');
  if (!timingSafeEqual(actual, signedDigest)) {
    throw new OtaError('MANIFEST_HASH_MISMATCH', `${LINK_JWS}: payload sha256 does not match the ${manifestBytes.length} manifest bytes`, {
      field: `${LINK_JWS}.payload.sha256`,
    });
  }
  const parsed = parseUpdateManifest(manifestBytes);
  return { manifest: parsed, manifestBytes, rootKid, signingKey: { kid, alg: jws.alg, hash, publicKey: signingKeyObject } };
}
