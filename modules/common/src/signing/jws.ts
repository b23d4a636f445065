import { sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { OtaError } from '../errors.ts';
import type { ResultCodeName } from '../resultCodes.ts';
import { base64url, decodeBase64url, isPlainObject } from '../encoding.ts';
import { algorithmsForKey, isJwsAlgorithm } from './keys.ts';
import type { JwsAlgorithm } from './keys.ts';

// Compact JWS (RFC 7515) over Node's crypto. A library would hide exactly the details this chain must pin:
// which alg a key may use, the ECDSA signature encoding, and that the signing input is the exact received text.

export interface DecodedJws {
  header: Record<string, unknown>;
  alg: JwsAlgorithm;
  payload: Buffer;
  signature: Buffer;
  /** ASCII bytes of `header.payload` exactly as received. */
  signingInput: Buffer;
}

/** A JWS is never more than a few KB here; a large one is an attack on the parser. */
const MAX_JWS_LENGTH = 64 * 1024;

export function decodeCompactJws(jws: string, link: string, code: ResultCodeName): DecodedJws {
  const fail = (rule: string): never => {
    throw new OtaError(code, `${link}: ${rule}`, { field: link });
  };
  if (typeof jws !== 'string') fail('must be a string');
  if (jws.length > MAX_JWS_LENGTH) fail(`longer than ${MAX_JWS_LENGTH} characters`);
  const parts = jws.trim().split('.');
  if (parts.length !== 3) fail(`a compact JWS has 3 dot-separated parts, got ${parts.length}`);
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
  const headerBytes = decodeBase64url(headerPart) ?? fail('header is not base64url');
  const payload = decodeBase64url(payloadPart) ?? fail('payload is not base64url');
  const signature = decodeBase64url(signaturePart) ?? fail('signature is not base64url');
  if (signature.length === 0) fail('signature is empty');
  let header: unknown;
  try {
    header = JSON.parse(headerBytes.toString('utf8'));
  } catch {
    fail('header is not JSON');
  }
  if (!isPlainObject(header)) return fail('header is not a JSON object');
  // We understand no critical extensions, so RFC 7515 4.1.11 says refuse any.
  if ('crit' in header) fail('header has "crit" extensions, none are supported');
  const alg = header.alg;
  if (!isJwsAlgorithm(alg)) {
    throw new OtaError('SIGNATURE_ALGORITHM_UNSUPPORTED', `${link}: alg ${JSON.stringify(alg)} is not one of RS256, RS384, RS512, ES256, EdDSA`, {
      field: `${link}.alg`,
    });
  }
  return { header, alg, payload, signature, signingInput: Buffer.from(`${headerPart}.${payloadPart}`, 'ascii') };
}

const digestOf: Record<JwsAlgorithm, string | null> = { RS256: 'sha256', RS384: 'sha384', RS512: 'sha512', ES256: 'sha256', EdDSA: null };

export function signCompactJws(header: Record<string, unknown>, payload: Uint8Array, key: KeyObject, alg: JwsAlgorithm): string {
  if (!algorithmsForKey(key).includes(alg)) throw new Error(`a ${key.asymmetricKeyType} key cannot sign ${alg}`);
  const signingInput = `${base64url(JSON.stringify({ ...header, alg }))}.${base64url(payload)}`;
  const signature = sign(digestOf[alg], Buffer.from(signingInput, 'ascii'), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${signingInput}.${base64url(signature)}`;
}

/** Checks that `alg` fits the key before verifying, so an RSA key cannot be fed an ES256 header or vice versa. */
export function verifyJwsSignature(jws: DecodedJws, key: KeyObject, link: string, code: ResultCodeName): void {
  if (!algorithmsForKey(key).includes(jws.alg)) {
    throw new OtaError('SIGNATURE_ALGORITHM_UNSUPPORTED', `${link}: alg ${jws.alg} does not fit a ${key.asymmetricKeyType} key`, {
      field: `${link}.alg`,
    });
  }
  // P1363 ECDSA signatures for P-256 are exactly 64 bytes; anything else is DER or garbage.
  if (jws.alg === 'ES256' && jws.signature.length !== 64) {
    throw new OtaError(code, `${link}: ES256 signature must be 64 bytes, got ${jws.signature.length}`, { field: link });
  }
  let ok = false;
  try {
    ok = verify(digestOf[jws.alg], jws.signingInput, jws.alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key, jws.signature);
  } catch {
    ok = false;
  }
  if (!ok) throw new OtaError(code, `${link}: signature does not verify`, { field: link });
}
