import { createPublicKey, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { OtaError } from '../errors.ts';
import { base64url, decodeAnyBase64, decodeBase64url, isPlainObject } from '../encoding.ts';
import { parseJsonDocument } from '../manifest/rules.ts';
import { MIN_RSA_BITS, importPublicJwk } from './keys.ts';

// ADU's root key package (schema azure-deviceupdate-rootkeypackage-1.0): a list of root keys, disabled root
// keys and disabled signing keys, signed by root keys. The signed bytes are the compact JSON serialization of
// "protected" in document order, which is how the ADU agent re-serializes it before verifying.

export type HashAlgorithmName = 'SHA256' | 'SHA384' | 'SHA512';

export interface DisabledSigningKey {
  alg: HashAlgorithmName;
  /** Hash of the signing key's DER SubjectPublicKeyInfo, base64 or base64url. */
  hash: string;
}

export interface PackagedRootKey {
  keyType: 'RSA';
  n: string;
  /** ADU's own files write 65537; the schema says a (base64url) string. Both are read. */
  e: string | number;
}

export interface RootKeyPackageContents {
  isTest: boolean;
  version: number;
  /** Unix seconds. */
  published: number;
  disabledRootKeys: string[];
  disabledSigningKeys: DisabledSigningKey[];
  rootKeys: Record<string, PackagedRootKey>;
}

export interface RootKeyPackageSignature {
  alg: 'RS256' | 'RS384' | 'RS512';
  sig: string;
  /** Our addition (the schema leaves signature objects open): which root made it, so verifiers need not guess. */
  kid?: string;
}

export interface RootKeyPackage {
  protected: RootKeyPackageContents;
  signatures: RootKeyPackageSignature[];
  /** Exactly what the signatures cover. */
  signedBytes: Buffer;
}

const CODE = 'ROOT_KEY_PACKAGE_INVALID';
const fail = (field: string, rule: string): never => {
  throw new OtaError(CODE, `root key package ${field}: ${rule}`, { field });
};

export function parseRootKeyPackage(input: string | Uint8Array | object): RootKeyPackage {
  const document = typeof input === 'string' || input instanceof Uint8Array ? parseJsonDocument(input, 'root key package') : input;
  if (!isPlainObject(document)) return fail('/', 'must be a JSON object');
  for (const key of Object.keys(document)) if (key !== 'protected' && key !== 'signatures') fail(`/${key}`, 'property is not allowed');
  const p = document.protected;
  if (!isPlainObject(p)) return fail('/protected', 'must be an object');
  const allowed = ['isTest', 'version', 'published', 'disabledRootKeys', 'disabledSigningKeys', 'rootKeys'];
  for (const key of Object.keys(p)) if (!allowed.includes(key)) fail(`/protected/${key}`, 'property is not allowed');
  if (typeof p.isTest !== 'boolean') fail('/protected/isTest', 'must be a boolean');
  if (!Number.isSafeInteger(p.version) || (p.version as number) < 1) fail('/protected/version', 'must be a whole number >= 1');
  if (!Number.isSafeInteger(p.published) || (p.published as number) < 0) fail('/protected/published', 'must be unix seconds');
  if (!Array.isArray(p.disabledRootKeys) || p.disabledRootKeys.some((k) => typeof k !== 'string' || k.length === 0)) {
    fail('/protected/disabledRootKeys', 'must be an array of key ids');
  }
  if (!Array.isArray(p.disabledSigningKeys)) fail('/protected/disabledSigningKeys', 'must be an array');
  (p.disabledSigningKeys as unknown[]).forEach((entry, i) => {
    const field = `/protected/disabledSigningKeys/${i}`;
    if (!isPlainObject(entry)) return fail(field, 'must be an object');
    if (!['SHA256', 'SHA384', 'SHA512'].includes(entry.alg as string)) fail(`${field}/alg`, 'must be SHA256, SHA384 or SHA512');
    const bytes = typeof entry.hash === 'string' ? decodeAnyBase64(entry.hash) : undefined;
    const expected = { SHA256: 32, SHA384: 48, SHA512: 64 }[entry.alg as HashAlgorithmName];
    if (!bytes || bytes.length !== expected) fail(`${field}/hash`, `must be ${expected} bytes in base64`);
  });
  if (!isPlainObject(p.rootKeys) || Object.keys(p.rootKeys).length === 0) fail('/protected/rootKeys', 'must be an object with at least one key');
  for (const [kid, key] of Object.entries(p.rootKeys as Record<string, unknown>)) {
    rootKeyObject(kid, key);
  }
  if (!Array.isArray(document.signatures) || document.signatures.length === 0) fail('/signatures', 'must be a non-empty array');
  (document.signatures as unknown[]).forEach((entry, i) => {
    const field = `/signatures/${i}`;
    if (!isPlainObject(entry)) return fail(field, 'must be an object');
    if (!['RS256', 'RS384', 'RS512'].includes(entry.alg as string)) fail(`${field}/alg`, 'must be RS256, RS384 or RS512');
    if (typeof entry.sig !== 'string' || !decodeBase64url(entry.sig)?.length) fail(`${field}/sig`, 'must be base64url');
    if (entry.kid !== undefined && typeof entry.kid !== 'string') fail(`${field}/kid`, 'must be a string');
  });
  return {
    protected: p as unknown as RootKeyPackageContents,
    signatures: document.signatures as RootKeyPackageSignature[],
    signedBytes: Buffer.from(JSON.stringify(p), 'utf8'),
  };
}

/** Public key of a packaged root; RSA only, as the package schema allows. */
export function rootKeyObject(kid: string, key: unknown): KeyObject {
  const field = `/protected/rootKeys/${kid}`;
  if (!isPlainObject(key)) return fail(field, 'must be an object');
  if (key.keyType !== 'RSA') fail(`${field}/keyType`, 'must be "RSA"');
  if (typeof key.n !== 'string') fail(`${field}/n`, 'must be a base64url string');
  const e = key.e === 65537 ? 'AQAB' : key.e;
  if (typeof e !== 'string') fail(`${field}/e`, 'must be a base64url string or 65537');
  return importPublicJwk({ kty: 'RSA', n: key.n, e }, `root key package ${field}`, CODE);
}

const digestOf = { RS256: 'sha256', RS384: 'sha384', RS512: 'sha512' } as const;

/** Signs package contents with each root in `signers` (RS256) and returns the package JSON. */
export function createRootKeyPackage(contents: RootKeyPackageContents, signers: { kid: string; privateKey: KeyObject }[]): string {
  const signedBytes = Buffer.from(JSON.stringify(contents), 'utf8');
  const signatures = signers.map(({ kid, privateKey }) => {
    if (privateKey.asymmetricKeyType !== 'rsa') throw new Error(`root key ${kid} is not RSA; the package format only allows RSA roots`);
    return { alg: 'RS256', kid, sig: base64url(sign('sha256', signedBytes, privateKey)) };
  });
  const pkg = `${JSON.stringify({ protected: contents, signatures }, null, 2)}\n`;
  parseRootKeyPackage(pkg);
  return pkg;
}

export function packagedRootKey(publicKey: KeyObject): PackagedRootKey {
  const jwk = (publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey).export({ format: 'jwk' });
  if (jwk.kty !== 'RSA' || !jwk.n || !jwk.e) throw new Error('root keys in a package must be RSA');
  if ((publicKey.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) throw new Error(`root keys must have at least ${MIN_RSA_BITS} bits`);
  return { keyType: 'RSA', n: jwk.n, e: jwk.e };
}

/**
 * The root kids whose signatures on `pkg` verify, among `candidates`. A signature that names its kid is tried
 * against that root only; one without a kid (ADU's form) against every candidate.
 */
export function rootsThatSigned(pkg: RootKeyPackage, candidates: ReadonlyMap<string, KeyObject>): Set<string> {
  const signed = new Set<string>();
  for (const signature of pkg.signatures) {
    const sig = decodeBase64url(signature.sig);
    if (!sig) continue;
    const tries = signature.kid === undefined ? [...candidates] : candidates.has(signature.kid) ? [[signature.kid, candidates.get(signature.kid)!] as const] : [];
    for (const [kid, key] of tries) {
      let ok = false;
      try {
        ok = verify(digestOf[signature.alg], pkg.signedBytes, key, sig);
      } catch {
        ok = false;
      }
      if (ok) signed.add(kid);
    }
  }
  return signed;
}
