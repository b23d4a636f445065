import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import {
  MemoryReplayGuard,
  SqliteReplayGuard,
  acceptManifest,
  checkUpdatePolicy,
  compareVersions,
  isUpdateInstalled,
  matchCompatibility,
  parseUpdateManifest,
  stepInstalledCriteria,
  verifyUpdateManifest,
} from '../src/index.ts';
import type { FullUpdateManifest, ReplayGuard } from '../src/index.ts';
import { HOUR, NOW, expectCode, makeRoot, makeSigningKey, signedManifest, trustStoreFor } from './fixtures.ts';

const root = makeRoot('policy.root');
const key = makeSigningKey(root, 'EdDSA');
const store = trustStoreFor(root);
const device = { properties: { deviceManufacturer: 'contoso', deviceModel: 'TOASTER', location: 'line-4' } };


function verified(overrides: Parameters<typeof signedManifest>[1] = {}): FullUpdateManifest {
  const { bytes, signature } = signedManifest(key, overrides);
  return verifyUpdateManifest(bytes, signature, store).manifest as FullUpdateManifest;
}

describe('update policy', () => {
  it('compares versions numerically', () => {
    expect(compareVersions('1.10', '1.9')).toBe(1);
    expect(compareVersions('1.2', '1.2.0.0')).toBe(0);
    expect(compareVersions('2021.1.1', '2021.11.0')).toBe(-1);
  });

  it('accepts an in-date, compatible, newer update', () => {
    expect(checkUpdatePolicy(verified({ version: '1.3.0' }), { ...device, installedVersion: '1.2.9' }, { now: NOW })).toEqual({
      compatibility: { deviceManufacturer: 'Contoso', deviceModel: 'Toaster' },
      isRollback: false,
    });
  });

  it('refuses an expired manifest', () => {
    expectCode(() => checkUpdatePolicy(verified({ expires: new Date(NOW.getTime() - 1) }), device, { now: NOW }), 'MANIFEST_EXPIRED', /has passed/);
    expectCode(() => checkUpdatePolicy(verified({ expires: NOW }), device, { now: NOW }), 'MANIFEST_EXPIRED');
  });

  it('refuses a manifest created in the future beyond clock skew', () => {
    expectCode(() => checkUpdatePolicy(verified(), device, { now: new Date(NOW.getTime() - 2 * HOUR) }), 'MANIFEST_NOT_YET_VALID');
  });

  for (const [name, guard] of [
    ['memory', () => new MemoryReplayGuard()],
    ['sqlite', () => new SqliteReplayGuard(new Database(':memory:'))],
  ] as [string, () => ReplayGuard][]) {
    it(`refuses a replayed manifest (${name} guard)`, () => {
      const replayGuard = guard();
      const manifest = verified({ manifestId: 'replay-test-0001' });
      checkUpdatePolicy(manifest, device, { now: NOW, replayGuard });
      acceptManifest(manifest, replayGuard);
      expectCode(() => checkUpdatePolicy(manifest, device, { now: NOW, replayGuard }), 'MANIFEST_REPLAYED', /replay-test-0001/);
      // Another issue of the same update with a fresh id is fine.
      expect(() => checkUpdatePolicy(verified({ manifestId: 'replay-test-0002' }), device, { now: NOW, replayGuard })).not.toThrow();
      // Once the manifest has expired its id can be forgotten: the expiry check refuses it from then on.
      replayGuard.forgetExpired(new Date(NOW.getTime() + 48 * HOUR));
      expect(replayGuard.hasSeen('replay-test-0001')).toBe(false);
    });
  }

  it('keeps the replay memory across a restart (sqlite)', () => {
    const db = new Database(':memory:');
    acceptManifest(verified({ manifestId: 'persisted-0001' }), new SqliteReplayGuard(db));
    expect(new SqliteReplayGuard(db).hasSeen('persisted-0001')).toBe(true);
  });

  it('refuses a downgrade unless the manifest is a signed rollback', () => {
    expectCode(() => checkUpdatePolicy(verified({ version: '1.1.0' }), { ...device, installedVersion: '1.2.0' }, { now: NOW }), 'DOWNGRADE_REFUSED', /1\.1\.0 is lower than the installed 1\.2\.0/);
    expect(checkUpdatePolicy(verified({ version: '1.1.0', rollback: true }), { ...device, installedVersion: '1.2.0' }, { now: NOW }).isRollback).toBe(true);
    // Re-installing the same version is not a downgrade.
    expect(checkUpdatePolicy(verified({ version: '1.2.0' }), { ...device, installedVersion: '1.2' }, { now: NOW }).isRollback).toBe(false);
  });

  it('a rollback flag cannot be added after signing', () => {
    const { bytes, signature } = signedManifest(key, { version: '1.1.0' });
    const doc = JSON.parse(bytes.toString()) as FullUpdateManifest;
    doc.edgeOta!.rollback = true;
    expectCode(() => verifyUpdateManifest(JSON.stringify(doc), signature, store), 'MANIFEST_HASH_MISMATCH');
  });

  it('enforces minimumVersion', () => {
    expectCode(() => checkUpdatePolicy(verified({ version: '3.0', minimumVersion: '2.0' }), { ...device, installedVersion: '1.9' }, { now: NOW }), 'MINIMUM_VERSION_NOT_MET');
    expect(() => checkUpdatePolicy(verified({ version: '3.0', minimumVersion: '2.0' }), { ...device, installedVersion: '2.0' }, { now: NOW })).not.toThrow();
  });

  it('refuses manifests without edgeOta lifetime unless allowed (ADU service manifests)', () => {
    const doc = JSON.parse(signedManifest(key).bytes.toString()) as FullUpdateManifest;
    delete doc.edgeOta;
    const manifest = parseUpdateManifest(JSON.stringify(doc));
    expectCode(() => checkUpdatePolicy(manifest, device, { now: NOW }), 'MANIFEST_LIFETIME_MISSING');
    expect(() => checkUpdatePolicy(manifest, device, { now: NOW, allowManifestsWithoutLifetime: true })).not.toThrow();
  });

  it('matches compatibility on manufacturer/model and custom properties, case-insensitively', () => {
    const compat: Record<string, string>[] = [{ deviceManufacturer: 'Contoso', deviceModel: 'Toaster', location: 'line-5' }, { deviceManufacturer: 'Contoso', location: 'LINE-4' }];
    expect(matchCompatibility(compat, device.properties)).toBe(compat[1]);
    expectCode(() => matchCompatibility([{ deviceManufacturer: 'Fabrikam', deviceModel: 'Toaster' }], device.properties), 'INCOMPATIBLE_DEVICE', /deviceManufacturer="Fabrikam", device has "contoso"/);
    expectCode(() => matchCompatibility([{ deviceManufacturer: 'Contoso', firmwareTrack: 'beta' }], device.properties), 'INCOMPATIBLE_DEVICE', /firmwareTrack/);
    expectCode(() => checkUpdatePolicy(verified(), { properties: { deviceManufacturer: 'Contoso' } }, { now: NOW }), 'INCOMPATIBLE_DEVICE');
  });

  it('uses installedCriteria for idempotency', () => {
    const manifest = verified({ version: '4.5.6' });
    const step = manifest.instructions.steps[0]!;
    expect('handler' in step && stepInstalledCriteria(step)).toBe('4.5.6');
    expect(stepInstalledCriteria({ handler: 'h/x:1', files: [], handlerProperties: { InstalledCriteria: '1.2' } })).toBe('1.2');
    expect(isUpdateInstalled(manifest, (handler, criteria) => handler === 'microsoft/script:1' && criteria === '4.5.6')).toBe(true);
    expect(isUpdateInstalled(manifest, () => false)).toBe(false);
  });
});
