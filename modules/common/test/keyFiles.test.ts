import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ROOT_KEY_KIND, ROOT_PUBLIC_KIND, SIGNING_KEY_KIND, createSigningKey, generateKeyPair, isOtaError, publicJwk, readRootPublicKeyFileSync, readSigningKeyFileSync,
} from '../src/index.ts';

// The key files services read at start-up: the right kind gives the key, anything else a KEY_FILE_INVALID naming the file.

describe('key files (sync readers)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'key-files-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const root = generateKeyPair('RS256', 2048);
  const signing = createSigningKey({ kid: 's1', alg: 'ES256', rootKid: 'r1', rootPrivateKey: root.privateKey });
  const write = (name: string, value: unknown): string => {
    const file = path.join(dir, name);
    writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
    return file;
  };
  const rootPrivate = write('r1.root.key.json', { kind: ROOT_KEY_KIND, kid: 'r1', alg: 'RS256', privateJwk: root.privateKey.export({ format: 'jwk' }) });
  const rootPublic = write('r1.root.pub.json', { kind: ROOT_PUBLIC_KIND, kid: 'r1', jwk: publicJwk(root.publicKey) });
  const signingFile = write('s1.signing.key.json', { kind: SIGNING_KEY_KIND, kid: 's1', alg: 'ES256', privateJwk: signing.privateKey.export({ format: 'jwk' }), sjwk: signing.sjwk });

  it('reads a signing key and a root public key, also from the root\'s private file', () => {
    expect(readSigningKeyFileSync(signingFile)).toMatchObject({ kid: 's1', alg: 'ES256', sjwk: signing.sjwk });
    expect(readRootPublicKeyFileSync(rootPublic)).toEqual({ kid: 'r1', jwk: publicJwk(root.publicKey) });
    expect(readRootPublicKeyFileSync(rootPrivate)).toEqual({ kid: 'r1', jwk: publicJwk(root.publicKey) });
  });

  it.each([
    ['a missing file', () => readSigningKeyFileSync(path.join(dir, 'absent.json')), /cannot be read/],
    ['not JSON', () => readSigningKeyFileSync(write('bad.json', '{')), /not a readable JSON key file/],
    ['the wrong kind', () => readSigningKeyFileSync(rootPublic), /expected a edge-ota.signing-key file, found edge-ota.root-public-key/],
    ['a signing key without sjwk', () => readSigningKeyFileSync(write('nosjwk.json', { kind: SIGNING_KEY_KIND, kid: 's', privateJwk: {} })), /has no sjwk/],
    ['a public key file without jwk', () => readRootPublicKeyFileSync(write('nojwk.json', { kind: ROOT_PUBLIC_KIND, kid: 'r' })), /has no jwk/],
  ])('refuses %s with KEY_FILE_INVALID', (_name, read, message) => {
    let error: unknown;
    try {
      read();
    } catch (caught) {
      error = caught;
    }
    expect(isOtaError(error, 'KEY_FILE_INVALID'), String(error)).toBe(true);
    expect((error as Error).message).toMatch(message);
  });
});
