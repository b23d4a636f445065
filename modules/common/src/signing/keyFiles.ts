import { createPrivateKey, createPublicKey } from 'node:crypto';
import type { JsonWebKey, KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { OtaError } from '../errors.ts';
import { isPlainObject } from '../encoding.ts';
import { publicJwk } from './keys.ts';
import type { SigningAlgorithm } from './keys.ts';
import type { SigningKey } from './manifestSigner.ts';

// The key files `ota keys` writes and the dispatcher reads: JSON with a "kind", so a tool handed the wrong file
// says so instead of misbehaving (docs/signed-updates.md, section 2). Parsing is here once; the CLI reads files
// asynchronously, services at start-up synchronously.

export const ROOT_KEY_KIND = 'edge-ota.root-key';
export const ROOT_PUBLIC_KIND = 'edge-ota.root-public-key';
export const SIGNING_KEY_KIND = 'edge-ota.signing-key';

export interface RootKeyFile {
  kid: string;
  privateKey: KeyObject;
}

export interface RootPublicKeyFile {
  kid: string;
  jwk: JsonWebKey;
}

function keyJson(text: string, name: string, kinds: readonly string[]): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new OtaError('KEY_FILE_INVALID', `${name}: not a readable JSON key file`, { cause });
  }
  if (!isPlainObject(value) || typeof value.kind !== 'string' || !kinds.includes(value.kind)) {
    throw new OtaError('KEY_FILE_INVALID', `${name}: expected a ${kinds.join(' or ')} file, found ${isPlainObject(value) ? String(value.kind) : 'something else'}`);
  }
  return value;
}

function privateKeyFrom(value: unknown, name: string): KeyObject {
  try {
    return createPrivateKey({ key: value as JsonWebKey, format: 'jwk' });
  } catch (cause) {
    throw new OtaError('KEY_FILE_INVALID', `${name}: privateJwk is not a usable private key`, { cause });
  }
}

export function parseRootKeyFile(text: string, name: string): RootKeyFile {
  const value = keyJson(text, name, [ROOT_KEY_KIND]);
  return { kid: String(value.kid), privateKey: privateKeyFrom(value.privateJwk, name) };
}

/** A root public key file, or a root's private file, whose public half is used (so ceremonies need not pass both). */
export function parseRootPublicKeyFile(text: string, name: string): RootPublicKeyFile {
  const value = keyJson(text, name, [ROOT_PUBLIC_KIND, ROOT_KEY_KIND]);
  if (value.kind === ROOT_KEY_KIND) return { kid: String(value.kid), jwk: publicJwk(createPublicKey(privateKeyFrom(value.privateJwk, name))) };
  if (!isPlainObject(value.jwk)) throw new OtaError('KEY_FILE_INVALID', `${name}: has no jwk`);
  return { kid: String(value.kid), jwk: value.jwk };
}

export function parseSigningKeyFile(text: string, name: string): SigningKey {
  const value = keyJson(text, name, [SIGNING_KEY_KIND]);
  if (typeof value.sjwk !== 'string') throw new OtaError('KEY_FILE_INVALID', `${name}: has no sjwk`);
  return { kid: String(value.kid), alg: value.alg as SigningAlgorithm, privateKey: privateKeyFrom(value.privateJwk, name), sjwk: value.sjwk };
}

function readKeyFileText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new OtaError('KEY_FILE_INVALID', `${path}: cannot be read (${(cause as Error).message})`, { cause });
  }
}

export function readSigningKeyFileSync(path: string): SigningKey {
  return parseSigningKeyFile(readKeyFileText(path), path);
}

export function readRootPublicKeyFileSync(path: string): RootPublicKeyFile {
  return parseRootPublicKeyFile(readKeyFileText(path), path);
}
