import { createPrivateKey, createPublicKey } from 'node:crypto';
import type { JsonWebKey, KeyObject } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { OtaError } from '../errors.ts';
import { isPlainObject } from '../encoding.ts';
import { publicJwk } from '../signing/keys.ts';
import type { SigningAlgorithm } from '../signing/keys.ts';
import type { SigningKey } from '../signing/manifestSigner.ts';
import { TrustStore } from '../signing/trustStore.ts';

// Key files are JSON with a "kind" so a command handed the wrong file says so instead of misbehaving.
// Private key files are created 0600 and never overwritten; nothing prints their contents.

export const ROOT_KEY_KIND = 'edge-ota.root-key';
export const ROOT_PUBLIC_KIND = 'edge-ota.root-public-key';
export const SIGNING_KEY_KIND = 'edge-ota.signing-key';

export interface RootKeyFile {
  kid: string;
  privateKey: KeyObject;
}

export async function writePrivateFile(path: string, value: unknown): Promise<void> {
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600, flag: 'wx' }).catch((cause: NodeJS.ErrnoException) => {
    throw new OtaError('IO_ERROR', `${path}: ${cause.code === 'EEXIST' ? 'exists already; key files are never overwritten' : cause.message}`, { cause });
  });
  // The mode above is filtered by umask; make 0600 explicit.
  await chmod(path, 0o600);
}

/** Strings are written as they are (an sjwk), anything else as JSON. */
export async function writePublicFile(path: string, value: unknown): Promise<void> {
  const text = typeof value === 'string' ? value : JSON.stringify(value, null, 2);
  await writeFile(path, `${text}\n`, { flag: 'wx' }).catch((cause: NodeJS.ErrnoException) => {
    throw new OtaError('IO_ERROR', `${path}: ${cause.code === 'EEXIST' ? 'exists already' : cause.message}`, { cause });
  });
}

async function readKeyJson(path: string, kind: string): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch (cause) {
    throw new OtaError('KEY_FILE_INVALID', `${path}: not a readable JSON key file`, { cause });
  }
  if (!isPlainObject(value) || value.kind !== kind) {
    throw new OtaError('KEY_FILE_INVALID', `${path}: expected a ${kind} file, found ${isPlainObject(value) ? String(value.kind) : 'something else'}`);
  }
  return value;
}

function privateKeyFrom(value: unknown, path: string): KeyObject {
  try {
    return createPrivateKey({ key: value as JsonWebKey, format: 'jwk' });
  } catch (cause) {
    throw new OtaError('KEY_FILE_INVALID', `${path}: privateJwk is not a usable private key`, { cause });
  }
}

export async function readRootKey(path: string): Promise<RootKeyFile> {
  const value = await readKeyJson(path, ROOT_KEY_KIND);
  return { kid: String(value.kid), privateKey: privateKeyFrom(value.privateJwk, path) };
}

export async function readRootPublicKey(path: string): Promise<{ kid: string; jwk: JsonWebKey }> {
  // A root's private file also yields its public half, so ceremonies need not pass both.
  const raw = JSON.parse(await readFile(path, 'utf8').catch(() => 'null')) as unknown;
  if (isPlainObject(raw) && raw.kind === ROOT_KEY_KIND) {
    const root = await readRootKey(path);
    return { kid: root.kid, jwk: publicJwk(createPublicKey(root.privateKey)) };
  }
  const value = await readKeyJson(path, ROOT_PUBLIC_KIND);
  return { kid: String(value.kid), jwk: value.jwk as JsonWebKey };
}

export async function readSigningKey(path: string): Promise<SigningKey> {
  const value = await readKeyJson(path, SIGNING_KEY_KIND);
  if (typeof value.sjwk !== 'string') throw new OtaError('KEY_FILE_INVALID', `${path}: has no sjwk`);
  return { kid: String(value.kid), alg: value.alg as SigningAlgorithm, privateKey: privateKeyFrom(value.privateJwk, path), sjwk: value.sjwk };
}

export interface TrustFlags {
  trust?: string[];
  'adu-roots'?: boolean;
  'root-key-package'?: string;
  'test-mode'?: boolean;
}

export async function trustStoreFromFlags(flags: TrustFlags): Promise<TrustStore> {
  const rootKeys = await Promise.all((flags.trust ?? []).map(readRootPublicKey));
  if (rootKeys.length === 0 && !flags['adu-roots']) {
    throw new OtaError('USAGE_ERROR', 'no trusted roots: pass --trust <root public key file> and/or --adu-roots');
  }
  const rootKeyPackage = flags['root-key-package'] ? await readFile(flags['root-key-package'], 'utf8') : undefined;
  return new TrustStore({
    rootKeys,
    aduServiceRoots: flags['adu-roots'] === true,
    testMode: flags['test-mode'] === true,
    ...(rootKeyPackage === undefined ? {} : { rootKeyPackage }),
  });
}
