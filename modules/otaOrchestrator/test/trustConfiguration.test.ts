import { generateKeyPair, publicJwk } from '@edge-ota/common';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readTrustedRoots } from '../src/trustConfiguration.ts';

// The orchestrator trusts what the key ceremony produces: `ota keys create-root` public files, or lists of roots.

describe('trusted roots', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'roots-'));
  const jwk = publicJwk(generateKeyPair('ES256').publicKey);
  const write = (name: string, value: unknown): string => {
    const file = path.join(dir, name);
    writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
    return file;
  };

  it('reads a root public key file, a list, and several files', () => {
    const single = write('contoso.root.pub.json', { kind: 'edge-ota.root-public-key', kid: 'contoso.root', jwk });
    const list = write('roots.json', [{ kid: 'a', jwk }, { kind: 'edge-ota.root-public-key', kid: 'b', jwk }]);
    expect(readTrustedRoots(single).map((r) => r.kid)).toEqual(['contoso.root']);
    expect(readTrustedRoots(`${single}:${list}`).map((r) => r.kid)).toEqual(['contoso.root', 'a', 'b']);
  });

  it.each([
    ['a private root key file', { kind: 'edge-ota.root-key', kid: 'x', privateJwk: {} }],
    ['an entry without a kid', [{ jwk }]],
    ['not JSON', '{'],
  ])('refuses %s with KEY_FILE_INVALID', (_name, value) => {
    const file = write(`bad-${Math.random()}.json`, value);
    expect(() => readTrustedRoots(file)).toThrow(/OTA_TRUST_ROOTS_FILE/);
    try {
      readTrustedRoots(file);
    } catch (error) {
      expect((error as { code: string }).code).toBe('KEY_FILE_INVALID');
    }
  });
});
