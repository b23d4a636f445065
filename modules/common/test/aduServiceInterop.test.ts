import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { TrustStore, checkUpdatePolicy, createRootKeyPackage, packagedRootKey, publicJwk, verifyUpdateManifest } from '../src/index.ts';
import { makeRoot } from './fixtures.ts';

// A manifest and signature produced by the Azure Device Update service itself, from Microsoft's public samples.
const vector = JSON.parse(readFileSync(new URL('./vectors/adu-service-signed-manifest.json', import.meta.url), 'utf8')) as {
  updateManifest: string;
  updateManifestSignature: string;
};

describe('manifests signed by the ADU service', () => {
  it('verify against Microsoft’s published root keys', () => {
    const verified = verifyUpdateManifest(vector.updateManifest, vector.updateManifestSignature, new TrustStore());
    expect(verified.rootKid).toBe('ADU.200702.R');
    expect(verified.signingKey).toMatchObject({ kid: 'ADU.210609.R.S', alg: 'RS256' });
    expect(verified.manifest.files.fc3558477982e3235!.filename).toBe('azure_iot_freertos_esp32.bin');
  });

  it('fail at the root link when the store does not trust ADU roots', () => {
    expect(() => verifyUpdateManifest(vector.updateManifest, vector.updateManifestSignature, new TrustStore({ aduServiceRoots: false }))).toThrow(
      expect.objectContaining({ code: 'ROOT_KEY_UNKNOWN' }),
    );
  });

  it('fail on one changed byte of the manifest', () => {
    const tampered = vector.updateManifest.replace('866128', '866129');
    expect(() => verifyUpdateManifest(tampered, vector.updateManifestSignature, new TrustStore())).toThrow(expect.objectContaining({ code: 'MANIFEST_HASH_MISMATCH' }));
  });

  it('can be cut off by a root key package that disables the ADU root', () => {
    const own = makeRoot('own.root');
    const store = new TrustStore({ rootKeys: [{ kid: own.kid, jwk: publicJwk(own.publicKey) }] });
    store.applyRootKeyPackage(
      createRootKeyPackage(
        { isTest: false, version: 1, published: 1, disabledRootKeys: ['ADU.200702.R'], disabledSigningKeys: [], rootKeys: { [own.kid]: packagedRootKey(own.publicKey) } },
        [own],
      ),
    );
    expect(() => verifyUpdateManifest(vector.updateManifest, vector.updateManifestSignature, store)).toThrow(expect.objectContaining({ code: 'ROOT_KEY_DISABLED' }));
  });

  it('carry no edgeOta lifetime, so policy must opt in to them explicitly', () => {
    const { manifest } = verifyUpdateManifest(vector.updateManifest, vector.updateManifestSignature, new TrustStore());
    const device = { properties: { deviceManufacturer: 'ESPRESSIF', deviceModel: 'ESP32-Azure-IoT-Kit' }, installedVersion: '1.0' };
    expect(() => checkUpdatePolicy(manifest, device)).toThrow(expect.objectContaining({ code: 'MANIFEST_LIFETIME_MISSING' }));
    expect(checkUpdatePolicy(manifest, device, { allowManifestsWithoutLifetime: true }).isRollback).toBe(false);
  });
});
