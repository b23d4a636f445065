import path from 'node:path';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { TrustStore, createRootKeyPackage, packagedRootKey, parseRootKeyPackage } from '../src/index.ts';
import type { RootKeyPackageContents } from '../src/index.ts';
import { expectCode, makeRoot, rootDescription, trustStoreFor } from './fixtures.ts';
import { sharedSchemasDir } from './sharedSchemas.ts';

const rootA = makeRoot('root.A');
const rootB = makeRoot('root.B');
const rootC = makeRoot('root.C');

function contents(version: number, extra: Partial<RootKeyPackageContents> = {}): RootKeyPackageContents {
  return {
    isTest: false,
    version,
    published: 1_700_000_000 + version,
    disabledRootKeys: [],
    disabledSigningKeys: [],
    rootKeys: { [rootC.kid]: packagedRootKey(rootC.publicKey) },
    ...extra,
  };
}


describe('root key package', () => {
  it('produces packages that ADU’s root key package schema accepts', () => {
    const schema = JSON.parse(readFileSync(path.join(sharedSchemasDir, 'azure-deviceupdate-rootkeypackage-1.0.json'), 'utf8')) as object;
    const validate = new Ajv2020({ strict: false }).compile(schema);
    const pkg = JSON.parse(createRootKeyPackage(contents(1, { disabledSigningKeys: [{ alg: 'SHA256', hash: 'Y0jA4rDItwp5NIZYPUP8jAQoXIRPSKCDo4xtiWjyvig' }] }), [rootA, rootB])) as unknown;
    expect(validate(pkg), JSON.stringify(validate.errors)).toBe(true);
  });

  it('applies a newer package, treats the same one as current and refuses older or equal-but-different ones', () => {
    const store = trustStoreFor(rootA);
    const v2 = createRootKeyPackage(contents(2), [rootA]);
    expect(store.applyRootKeyPackage(v2)).toEqual({ status: 'applied', version: 2 });
    expect(store.applyRootKeyPackage(v2)).toEqual({ status: 'current', version: 2 });
    expectCode(() => store.applyRootKeyPackage(createRootKeyPackage(contents(1), [rootA])), 'ROOT_KEY_PACKAGE_STALE', /1 is not newer than the held version 2/);
    expectCode(() => store.applyRootKeyPackage(createRootKeyPackage(contents(2, { published: 1 }), [rootA])), 'ROOT_KEY_PACKAGE_STALE');
    expect(store.applyRootKeyPackage(createRootKeyPackage(contents(3), [rootA])).status).toBe('applied');
    expect(store.rootKeyPackageVersion).toBe(3);
  });

  it('refuses a package signed only by an unknown root, or with a tampered body', () => {
    const store = trustStoreFor(rootA);
    expectCode(() => store.applyRootKeyPackage(createRootKeyPackage(contents(1), [rootB])), 'ROOT_KEY_PACKAGE_SIGNATURE_INVALID', /0 valid signature/);
    const pkg = JSON.parse(createRootKeyPackage(contents(1), [rootA])) as { protected: RootKeyPackageContents };
    pkg.protected.disabledRootKeys = ['root.A'];
    expectCode(() => store.applyRootKeyPackage(JSON.stringify(pkg)), 'ROOT_KEY_PACKAGE_SIGNATURE_INVALID');
    expect(store.rootKeyPackageVersion).toBe(0);
  });

  it('does not let a root vouch for a package that disables it', () => {
    const store = trustStoreFor(rootA, rootB);
    expectCode(() => store.applyRootKeyPackage(createRootKeyPackage(contents(1, { disabledRootKeys: [rootA.kid] }), [rootA])), 'ROOT_KEY_PACKAGE_SIGNATURE_INVALID');
    store.applyRootKeyPackage(createRootKeyPackage(contents(1, { disabledRootKeys: [rootA.kid] }), [rootB]));
    expect(store.enabledRootKids().sort()).toEqual([rootB.kid, rootC.kid]);
    // A disabled root can no longer sign later packages either.
    expectCode(() => store.applyRootKeyPackage(createRootKeyPackage(contents(2), [rootA])), 'ROOT_KEY_PACKAGE_SIGNATURE_INVALID', /trusted: root\.B, root\.C/);
  });

  it('enforces a signature threshold when asked', () => {
    const store = new TrustStore({ rootKeys: [rootDescription(rootA), rootDescription(rootB)], aduServiceRoots: false, packageSignatureThreshold: 2 });
    expectCode(() => store.applyRootKeyPackage(createRootKeyPackage(contents(1), [rootA])), 'ROOT_KEY_PACKAGE_SIGNATURE_INVALID', /1 valid signature\(s\).*2 required/);
    expect(store.applyRootKeyPackage(createRootKeyPackage(contents(1), [rootA, rootB])).status).toBe('applied');
  });

  it('accepts ADU-form signatures without kid by trying every trusted root', () => {
    const pkg = JSON.parse(createRootKeyPackage(contents(1), [rootB])) as { signatures: { kid?: string }[] };
    for (const sig of pkg.signatures) delete sig.kid;
    expect(trustStoreFor(rootA, rootB).applyRootKeyPackage(JSON.stringify(pkg)).status).toBe('applied');
  });

  it('keeps test and production packages apart', () => {
    expectCode(() => trustStoreFor(rootA).applyRootKeyPackage(createRootKeyPackage(contents(1, { isTest: true }), [rootA])), 'ROOT_KEY_PACKAGE_TEST_MISMATCH');
    const testStore = new TrustStore({ rootKeys: [rootDescription(rootA)], aduServiceRoots: false, testMode: true });
    expect(testStore.applyRootKeyPackage(createRootKeyPackage(contents(1, { isTest: true }), [rootA])).status).toBe('applied');
  });

  it('restores from persisted JSON', () => {
    const store = trustStoreFor(rootA);
    store.applyRootKeyPackage(createRootKeyPackage(contents(4), [rootA]));
    const restored = new TrustStore({ rootKeys: [rootDescription(rootA)], aduServiceRoots: false, rootKeyPackage: store.rootKeyPackageJson! });
    expect(restored.rootKeyPackageVersion).toBe(4);
    expect(restored.enabledRootKids().sort()).toEqual([rootA.kid, rootC.kid]);
  });

  it('reads ADU’s own spelling of the exponent (a number)', () => {
    const c = contents(1);
    const key = c.rootKeys[rootC.kid]!;
    const pkg = createRootKeyPackage({ ...c, rootKeys: { [rootC.kid]: { ...key, e: 65537 } } }, [rootA]);
    expect(trustStoreFor(rootA).applyRootKeyPackage(pkg).status).toBe('applied');
  });

  const hostile: [string, unknown][] = [
    ['not an object', []],
    ['no protected', { signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['extra top-level key', { protected: contents(1), signatures: [{ alg: 'RS256', sig: 'AA' }], more: 1 }],
    ['version zero', { protected: contents(0), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['version fraction', { protected: contents(1.5), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['isTest missing', { protected: { ...contents(1), isTest: undefined }, signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['no root keys', { protected: contents(1, { rootKeys: {} }), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['EC root key', { protected: contents(1, { rootKeys: { k: { keyType: 'EC', n: 'AA', e: 'AQAB' } as never } }), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['short RSA root', { protected: contents(1, { rootKeys: { k: { keyType: 'RSA', n: 'AQAB', e: 'AQAB' } } }), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['disabled key with bad hash', { protected: contents(1, { disabledSigningKeys: [{ alg: 'SHA256', hash: 'AAAA' }] }), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['disabled key with MD5', { protected: contents(1, { disabledSigningKeys: [{ alg: 'MD5' as never, hash: 'AAAA' }] }), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['disabled root not a string', { protected: contents(1, { disabledRootKeys: [5 as never] }), signatures: [{ alg: 'RS256', sig: 'AA' }] }],
    ['no signatures', { protected: contents(1), signatures: [] }],
    ['ES256 signature', { protected: contents(1), signatures: [{ alg: 'ES256', sig: 'AA' }] }],
    ['signature not base64url', { protected: contents(1), signatures: [{ alg: 'RS256', sig: 'a+b/' }] }],
  ];
  for (const [name, value] of hostile) {
    it(`rejects a hostile package: ${name}`, () => {
      expectCode(() => parseRootKeyPackage(JSON.stringify(value)), 'ROOT_KEY_PACKAGE_INVALID', /root key package \/\S*: /);
    });
  }
});
