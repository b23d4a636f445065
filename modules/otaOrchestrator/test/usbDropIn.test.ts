import { writeBundle } from '@edge-ota/common';
import type { InlineStep } from '@edge-ota/common';
import { randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { UsbDropIn } from '../src/usbDropIn.ts';
import type { PayloadFile } from './support/composedUpdates.ts';
import { childManifest, fileEntry } from './support/composedUpdates.ts';
import type { EngineHarness } from './support/engineHarness.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import type { Publisher } from './support/signedUpdates.ts';
import { compatibleProperties, createPublisher } from './support/signedUpdates.ts';

// The USB drop-in with real bundles on disk and the real engine: no network at all.

describe('USB drop-in', () => {
  let publisher: Publisher;
  let harness: EngineHarness;
  let stick: string;
  let dropIn: UsbDropIn;
  const app = Buffer.from('offline application\n'.repeat(2000));

  beforeAll(() => {
    publisher = createPublisher();
  });
  afterEach(async () => {
    await dropIn?.stop();
    await harness?.close();
  });

  const setUp = (targets = [{ deviceId: 'gw-1', properties: compatibleProperties }]): void => {
    harness = startEngine(publisher);
    stick = mkdtempSync(path.join(tmpdir(), 'usb-'));
    dropIn = new UsbDropIn({
      dir: stick,
      workDir: path.join(harness.root, 'usb-work'),
      trustStore: publisher.trustStore(),
      engine: harness.engine,
      targets: () => targets,
    });
  };

  /** A bundle file for an update of `app` installed by the file handler. */
  async function bundle(name: string, options: { compatibility?: Array<Record<string, string>>; signer?: Publisher } = {}): Promise<string> {
    const signer = options.signer ?? publisher;
    const delivery = signer.deliver({
      version: '5.0.0',
      files: { 'app.bin': app },
      steps: [{ handler: 'edge-ota/file:1', files: ['app.bin'], handlerProperties: { destination: path.join(harness.installRoot, 'app') } }],
      ...(options.compatibility ? { compatibility: options.compatibility } : {}),
    }, { baseUrl: 'http://unused' });
    const source = mkdtempSync(path.join(tmpdir(), 'bundle-src-'));
    writeFileSync(path.join(source, 'app.bin'), app);
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'bundle-out-')), name);
    await writeBundle({ manifest: Buffer.from(delivery.updateManifest), signature: delivery.updateManifestSignature, filePaths: { 'app.bin': path.join(source, 'app.bin') } }, out);
    return out;
  }

  it('installs a bundle dropped on the stick once its copy is complete, and only once', async () => {
    setUp();
    const file = await bundle('update.otabundle');
    copyFileSync(file, path.join(stick, 'update.otabundle'));
    expect(await dropIn.scan()).toEqual([]); // first sight: maybe still being copied
    const [result] = await dropIn.scan();
    expect(result).toMatchObject({ bundle: 'update.otabundle', status: 'queued' });
    await harness.engine.idle();
    const jobId = result?.jobIds[0] ?? '';
    expect(steps(harness.feedback(jobId)).at(-1)).toBe('job:succeeded');
    expect(readFileSync(path.join(harness.installRoot, 'app', 'app.bin'))).toEqual(app);
    expect(harness.store.installed('gw-1')).toMatchObject({ version: '5.0.0', source: 'usb' });
    expect(await dropIn.scan()).toEqual([]);
  });

  it('waits while a stick is still being copied, and rejects a bundle cut short', async () => {
    setUp();
    const file = await bundle('big.otabundle');
    const onStick = path.join(stick, 'big.otabundle');
    const full = readFileSync(file);
    writeFileSync(onStick, full.subarray(0, 1000));
    await dropIn.scan();
    writeFileSync(onStick, full.subarray(0, Math.floor(full.length / 2)));
    expect(await dropIn.scan()).toEqual([]); // still growing
    // The copy stopped half-way (stick pulled): stable but incomplete.
    const [cut] = await dropIn.scan();
    expect(cut).toMatchObject({ status: 'rejected' });
    expect(cut?.details).toMatch(/^BUNDLE_(TRUNCATED|MALFORMED|FILE_MISSING|SIZE_MISMATCH)/);
    expect(harness.store.recentJobs(5)).toEqual([]);
  });

  it.each([
    ['a corrupted payload byte', (f: string) => {
      const data = readFileSync(f);
      data[data.length - 2000] = (data[data.length - 2000] ?? 0) ^ 0xff;
      writeFileSync(f, data);
    }, /^BUNDLE_(HASH_MISMATCH|MALFORMED)/],
    ['trailing garbage', (f: string) => writeFileSync(f, Buffer.concat([readFileSync(f), Buffer.from('garbage')])), /^BUNDLE_(TRAILING_DATA|MALFORMED)/],
    ['a truncated archive', (f: string) => truncateSync(f, statSync(f).size - 700), /^BUNDLE_(TRUNCATED|MALFORMED|HASH_MISMATCH)/],
  ])('rejects a bundle with %s and installs nothing', async (_name, damage, code) => {
    setUp();
    const file = await bundle('bad.otabundle');
    damage(file);
    copyFileSync(file, path.join(stick, 'bad.otabundle'));
    await dropIn.scan();
    const [result] = await dropIn.scan();
    expect(result).toMatchObject({ status: 'rejected' });
    expect(result?.details).toMatch(code);
    expect(result?.extendedResultCode).toBeGreaterThan(0);
    expect(harness.store.recentJobs(5)).toEqual([]);
  });

  it('rejects a bundle signed by an unknown key', async () => {
    setUp();
    const file = await bundle('foreign.otabundle', { signer: createPublisher() });
    copyFileSync(file, path.join(stick, 'foreign.otabundle'));
    await dropIn.scan();
    const [result] = await dropIn.scan();
    expect(result?.status).toBe('rejected');
    expect(result?.details).toMatch(/^ROOT_KEY_UNKNOWN/);
  });

  it('ignores (and says so) a bundle for another kind of device, and serves every compatible target', async () => {
    setUp([
      { deviceId: 'gw-1', properties: compatibleProperties },
      { deviceId: 'child-a', properties: compatibleProperties },
      { deviceId: 'child-b', properties: { deviceManufacturer: 'Contoso', deviceModel: 'Other' } },
    ]);
    const other = await bundle('other.otabundle', { compatibility: [{ deviceManufacturer: 'Fabrikam', deviceModel: 'Toaster' }] });
    copyFileSync(other, path.join(stick, 'other.otabundle'));
    const mine = await bundle('mine.otabundle');
    mkdirSync(stick, { recursive: true });
    copyFileSync(mine, path.join(stick, 'mine.otabundle'));
    await dropIn.scan();
    const results = await dropIn.scan();
    expect(results.find((r) => r.bundle === 'other.otabundle')).toMatchObject({ status: 'notForThisGateway' });
    const queued = results.find((r) => r.bundle === 'mine.otabundle');
    expect(queued?.jobIds.map((id) => harness.store.getJob(id)?.targetId).sort()).toEqual(['child-a', 'gw-1']);
  });

  it('installs a multi-step bundle (reference steps) through the engine, with the children\'s files from the bundle', async () => {
    setUp();
    const log = path.join(harness.root, 'steps.log');
    const motorDir = path.join(harness.installRoot, 'motor');
    // Both children ship an install.sh: the bundle keeps them apart (children/<id>/install.sh).
    const script = (id: string, says: string): PayloadFile => ({ id, name: 'install.sh', data: Buffer.from(`#!/bin/sh\necho "${says} $1" >> ${log}\nexit 0\n`) });
    const scriptStep = (file: PayloadFile): InlineStep => ({ handler: 'microsoft/script:1', files: [file.id], handlerProperties: { scriptFileName: file.name } });
    const pre = { ...script('file0', 'parent'), name: 'pre.sh' };
    const firmware: PayloadFile = { id: 'step1file0', name: 'motor.bin', data: Buffer.from('motor firmware 1.1\n'.repeat(2000)) };
    const motorScript = script('step1file1', 'motor');
    const sensorScript = script('step2file0', 'sensor');
    const children = [
      { id: 'file1', name: 'motor.json', files: [firmware, motorScript], steps: [{ handler: 'edge-ota/file:1', files: [firmware.id], handlerProperties: { destination: motorDir } }, scriptStep(motorScript)] },
      { id: 'file2', name: 'sensor.json', files: [sensorScript], steps: [scriptStep(sensorScript)] },
    ].map((c) => ({ ...c, data: Buffer.from(JSON.stringify(childManifest({ update: c.name, version: '1.1.0', steps: c.steps, files: c.files }))) }));
    const manifest = {
      manifestVersion: '4',
      updateId: { provider: 'Contoso', name: 'Composed', version: '6.0.0' },
      compatibility: [compatibleProperties],
      instructions: { steps: [scriptStep(pre), ...children.map((c) => ({ type: 'reference', detachedManifestFileId: c.id }))] },
      files: Object.fromEntries([pre, ...children].map((f) => [f.id, fileEntry(f)])),
      createdDateTime: new Date(Date.now() - 60_000).toISOString(),
      edgeOta: { manifestId: randomUUID(), expiresDateTime: new Date(Date.now() + 3600_000).toISOString() },
    };
    const signed = publisher.deliverSigned(Buffer.from(JSON.stringify(manifest)), {});
    const source = mkdtempSync(path.join(tmpdir(), 'bundle-src-'));
    const onDisk = (dir: string, file: { name: string; data: Buffer }): string => {
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, file.name), file.data);
      return path.join(dir, file.name);
    };
    const out = path.join(mkdtempSync(path.join(tmpdir(), 'bundle-out-')), 'composed.otabundle');
    await writeBundle({
      manifest: Buffer.from(signed.updateManifest),
      signature: signed.updateManifestSignature,
      filePaths: Object.fromEntries([pre, ...children].map((f) => [f.name, onDisk(source, f)])),
      childFilePaths: Object.fromEntries(children.map((c) => [c.id, Object.fromEntries(c.files.map((f) => [f.name, onDisk(path.join(source, c.id), f)]))])),
    }, out);
    copyFileSync(out, path.join(stick, 'composed.otabundle'));
    await dropIn.scan();
    const [result] = await dropIn.scan();
    expect(result).toMatchObject({ bundle: 'composed.otabundle', status: 'queued' });
    await harness.engine.idle();

    const jobId = result?.jobIds[0] ?? '';
    expect(steps(harness.feedback(jobId)).at(-1)).toBe('job:succeeded');
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual([
      'parent --action-install', 'motor --action-install', 'sensor --action-install',
      'parent --action-apply', 'motor --action-apply', 'sensor --action-apply',
    ]);
    expect(readFileSync(path.join(motorDir, 'motor.bin'))).toEqual(firmware.data);
    expect(harness.store.installed('gw-1')).toMatchObject({ version: '6.0.0', source: 'usb' });
  });
});
