import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readBundle } from '../src/index.ts';
import { importManifestFor, makeRoot, makeSigningKey, tempDir, trustStoreFor } from './fixtures.ts';
import { childManifest, payload, world } from './multiStepFixtures.ts';

const bin = new URL('../bin/ota.js', import.meta.url).pathname;

function ota(cwd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [bin, ...args], { cwd, encoding: 'utf8', timeout: 60_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('ota CLI', () => {
  // About twenty CLI processes, each starting tsx: give a loaded two-core machine room.
  it('runs the key ceremony, signs, rotates, revokes and bundles, with documented exit codes', { timeout: 180_000 }, () => {
    const dir = tempDir('edge-ota-cli-');
    const { importManifest } = importManifestFor(dir, [{ filename: 'app.bin', size: 4096 }], '2.0.0');
    writeFileSync(path.join(dir, 'app.importmanifest.json'), JSON.stringify(importManifest));

    expect(ota(dir, 'keys', 'create-root', '--kid', 'root.main', '--bits', '2048').status).toBe(0);
    const backup = ota(dir, 'keys', 'create-root', '--kid', 'root.backup', '--bits', '2048', '--json');
    expect(backup.status).toBe(0);
    expect(JSON.parse(backup.stdout)).toMatchObject({ kid: 'root.backup', privateKeyFile: 'root.backup.root.key.json' });
    // Private keys: 0600, never on stdout, never overwritten.
    const privateJwk = (JSON.parse(readFileSync(path.join(dir, 'root.main.root.key.json'), 'utf8')) as { privateJwk: { d: string } }).privateJwk;
    expect(statSync(path.join(dir, 'root.main.root.key.json')).mode & 0o777).toBe(0o600);
    expect(backup.stdout).not.toContain('"d"');
    expect(ota(dir, 'keys', 'create-root', '--kid', 'root.main', '--bits', '2048').status).toBe(3);

    const signer = ota(dir, 'keys', 'create-signing', '--root', 'root.main.root.key.json', '--kid', 'signer.1', '--alg', 'EdDSA');
    expect(signer.status).toBe(0);
    expect(signer.stdout).not.toContain(privateJwk.d);
    expect(statSync(path.join(dir, 'signer.1.signing.key.json')).mode & 0o777).toBe(0o600);

    const imported = ota(dir, 'update', 'import', 'app.importmanifest.json', '--files', '.', '--signing-key', 'signer.1.signing.key.json', '--out', 'app.updatemanifest.json', '--json');
    expect(imported.status, imported.stderr).toBe(0);
    expect(JSON.parse(imported.stdout)).toMatchObject({ manifestFile: 'app.updatemanifest.json', signingKey: 'signer.1' });

    const trust = ['--trust', 'root.main.root.pub.json'];
    expect(ota(dir, 'update', 'verify', 'app.updatemanifest.json', ...trust).status).toBe(0);
    const policy = ota(dir, 'update', 'verify', 'app.updatemanifest.json', ...trust, '--device', 'deviceManufacturer=Contoso', '--device', 'deviceModel=Toaster', '--installed-version', '3.0');
    expect(policy.status).toBe(1);
    expect(policy.stderr).toContain('DOWNGRADE_REFUSED');
    expect(ota(dir, 'update', 'verify', 'app.updatemanifest.json', '--trust', 'root.backup.root.pub.json').stderr).toContain('ROOT_KEY_UNKNOWN');

    expect(ota(dir, 'bundle', 'create', '--manifest', 'app.updatemanifest.json', '--files', 'app.bin', '--out', 'app.otabundle').status).toBe(0);
    const verified = ota(dir, 'bundle', 'verify', 'app.otabundle', ...trust, '--json');
    expect(verified.status, verified.stderr).toBe(0);
    expect((JSON.parse(verified.stdout) as { files: unknown[] }).files).toHaveLength(1);
    expect(ota(dir, 'bundle', 'inspect', 'app.otabundle').stdout).toContain('NOT verified');

    // Rotate: package v1 adds the backup root; v2 disables the signing key.
    expect(ota(dir, 'keys', 'package', '--sign', 'root.main.root.key.json', '--root-pub', 'root.backup.root.pub.json', '--out', 'rkp-1.json').status).toBe(0);
    expect(ota(dir, 'keys', 'disable', '--from', 'rkp-1.json', '--sign', 'root.main.root.key.json', '--disable-signing', 'signer.1.sjwk', '--out', 'rkp-2.json').status).toBe(0);
    const revoked = ota(dir, 'bundle', 'verify', 'app.otabundle', ...trust, '--root-key-package', 'rkp-2.json', '--json');
    expect(revoked.status).toBe(1);
    expect(JSON.parse(revoked.stdout)).toMatchObject({ ok: false, error: { code: 'SIGNING_KEY_DISABLED' } });

    expect(ota(dir, 'keys', 'disable', '--from', 'rkp-1.json', '--sign', 'root.main.root.key.json', '--out', 'x.json').status).toBe(2);
    expect(ota(dir, 'bundle', 'verify', 'app.otabundle').status).toBe(2);
    expect(ota(dir, 'nonsense').status).toBe(2);
    expect(ota(dir, 'bundle', 'verify', 'missing.otabundle', ...trust).status).toBe(3);
  });

  it('bundles a multi-step update with --child-files <dir>/<file id>/, and names a missing child file', { timeout: 60_000 }, async () => {
    const root = makeRoot('cli.multistep.root');
    const script = payload('step1file0', 'install.sh', '#!/bin/sh\necho child\n');
    const w = world(makeSigningKey(root, 'ES256'), [{ id: 'file1', name: 'motor.json', manifest: childManifest('Motor', [script]), files: [script] }]);
    writeFileSync(path.join(w.dir, 'parent.updatemanifest.json'), w.bytes);
    writeFileSync(path.join(w.dir, 'parent.updatemanifest.json.jws'), w.signature);
    const create = (out: string, ...extra: string[]) =>
      ota(w.dir, 'bundle', 'create', '--manifest', 'parent.updatemanifest.json', '--files', 'app.bin', '--files', 'motor.json', '--out', out, ...extra);

    const missing = create('never.otabundle');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('BUNDLE_FILE_MISSING');
    expect(missing.stderr).toContain(`expected at ${path.join('<dir>', 'file1', 'install.sh')} with --child-files <dir>`);

    expect(create('parent.otabundle', '--child-files', '.').status).toBe(0);
    const verified = await readBundle(path.join(w.dir, 'parent.otabundle'), { trustStore: trustStoreFor(root) });
    expect(verified.files.map((f) => f.fileId)).toEqual(['file0', 'file1', 'step1file0']);
    expect(ota(w.dir, 'bundle', 'inspect', 'parent.otabundle').stdout).toContain('children/file1/install.sh');
  });
});
