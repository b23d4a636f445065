import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ArtifactServer } from './support/artifactServer.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import type { EngineHarness } from './support/engineHarness.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import type { Publisher } from './support/signedUpdates.ts';
import { createPublisher } from './support/signedUpdates.ts';

// The update engine with real handlers, real SQLite, real HTTP downloads and really signed manifests.

const appV1 = Buffer.from('application v1\n'.repeat(1000));
const appV2 = Buffer.from('application v2\n'.repeat(3000));
const happy = ['job:started', 'manifest:started', 'manifest:succeeded', 'download:started', 'download:succeeded', 'validate:started',
  'validate:succeeded', 'install:started', 'install:succeeded', 'apply:started', 'apply:succeeded', 'run:started', 'run:succeeded',
  'healthCheck:started', 'healthCheck:succeeded', 'commit:started', 'commit:succeeded', 'job:succeeded'];

describe('update engine', () => {
  let publisher: Publisher;
  let server: ArtifactServer;
  let harness: EngineHarness;
  beforeAll(async () => {
    publisher = createPublisher();
    server = await startArtifactServer();
    server.put('app.bin', appV2);
    server.put('v1.bin', appV1);
  });
  afterAll(async () => {
    await server.close();
  });
  afterEach(async () => {
    server.throttle(0);
    await harness?.close();
  });

  const fileUpdate = (version = '2.0.0', file = 'app.bin', data = appV2) => ({
    version,
    files: { [file]: data },
    steps: [{ handler: 'edge-ota/file:1', files: [file], handlerProperties: { destination: path.join(harness.installRoot, 'app') } }],
  });

  it('installs files, reports every step once in order, and records the installed version', async () => {
    harness = startEngine(publisher);
    const delivery = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    expect(harness.engine.submit(delivery, 'method')).toMatchObject({ accepted: true, disposition: 'queued' });
    await harness.engine.idle();
    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback)).toEqual(happy);
    expect(feedback.map((m) => m.sequence)).toEqual(feedback.map((_m, i) => i));
    expect(feedback.at(-1)).toMatchObject({ resultCode: 1, extendedResultCode: 0, installedVersion: '2.0.0', deviceId: 'gw-1', gatewayId: 'gw-1' });
    expect(readFileSync(path.join(harness.installRoot, 'app', 'app.bin'))).toEqual(appV2);
    expect(harness.store.installed('gw-1')?.version).toBe('2.0.0');
    // The job's scratch space is gone once it ended.
    expect(readdirSync(path.join(harness.root, 'data', 'jobs'))).toEqual([]);
  });

  it('treats the same job id twice as one job, and refuses the same manifest under another job id as a replay', async () => {
    harness = startEngine(publisher);
    const delivery = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    harness.engine.submit(delivery, 'method');
    expect(harness.engine.submit(delivery, 'twin')).toMatchObject({ disposition: 'duplicate' });
    const replay = { ...delivery, workflow: { ...delivery.workflow, id: 'another-job' } };
    const replayReply = harness.engine.submit(replay, 'method');
    expect(replayReply).toMatchObject({ accepted: false, disposition: 'rejected' });
    expect(replayReply.resultDetails).toMatch(/^MANIFEST_REPLAYED/);
    await harness.engine.idle();
    expect(harness.store.getJob('another-job')).toBeUndefined();
  });

  it.each([
    ['a tampered manifest', (d: ReturnType<Publisher['deliver']>) => ({ ...d, updateManifest: d.updateManifest.replace('2.0.0', '2.0.1') }), /^MANIFEST_HASH_MISMATCH/],
    ['a missing signature', (d: ReturnType<Publisher['deliver']>) => ({ ...d, updateManifestSignature: '' }), /^SIGNATURE_MALFORMED/],
    ['a manifest signed by an unknown root', () => createPublisher().deliver({ version: '2.0.0', files: { 'app.bin': appV2 }, steps: [{ handler: 'edge-ota/file:1', files: ['app.bin'] }] }, { baseUrl: 'http://x' }), /^ROOT_KEY_UNKNOWN/],
    ['a malformed delivery', () => ({ workflow: { action: 3 } }), /^UPDATE_DELIVERY_INVALID/],
    ['an unknown target', (d: ReturnType<Publisher['deliver']>) => ({ ...d, target: { deviceId: 'somebody-else' } }), /^INCOMPATIBLE_DEVICE/],
  ])('rejects %s before storing anything', (_name, mutate, code) => {
    harness = startEngine(publisher);
    const delivery = mutate(publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl }));
    const reply = harness.engine.submit(delivery, 'method');
    expect(reply).toMatchObject({ accepted: false, disposition: 'rejected' });
    expect(reply.resultDetails).toMatch(code);
    expect(reply.extendedResultCode).toBeGreaterThan(0);
    expect(harness.store.recentJobs(10)).toEqual([]);
  });

  it.each([
    ['corrupt', 'DOWNLOAD_HASH_MISMATCH'],
    ['overlong', 'DOWNLOAD_TOO_LONG'],
  ] as const)('fails a %s download with %s and installs nothing', async (how, code) => {
    harness = startEngine(publisher);
    server.misbehave('app.bin', how, 100);
    const delivery = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    server.misbehave('app.bin', how, 0);
    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback)).toEqual(['job:started', 'manifest:started', 'manifest:succeeded', 'download:started', 'download:failed', 'job:failed']);
    expect(feedback.at(-1)?.resultDetails).toMatch(new RegExp(`^${code}`));
    expect(existsSync(path.join(harness.installRoot, 'app', 'app.bin'))).toBe(false);
  });

  it('resumes a download cut short with a Range request instead of starting over', async () => {
    harness = startEngine(publisher);
    server.misbehave('app.bin', 'truncate', 1);
    const before = server.requests.length;
    const delivery = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    expect(steps(harness.feedback(delivery.workflow.id)).at(-1)).toBe('job:succeeded');
    const mine = server.requests.slice(before).filter((r) => r.path === '/files/app.bin');
    expect(mine).toHaveLength(2);
    expect(mine[1]?.range).toBe(`bytes=${Math.floor(appV2.length / 2)}-`);
  });

  it('retries a source that answers 503 and then succeeds', async () => {
    harness = startEngine(publisher);
    server.misbehave('app.bin', 'unavailable', 2);
    const delivery = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    expect(steps(harness.feedback(delivery.workflow.id)).at(-1)).toBe('job:succeeded');
  });

  it('refuses an incompatible update and a downgrade with their codes', async () => {
    harness = startEngine(publisher);
    const wrongModel = publisher.deliver({ ...fileUpdate(), compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Toaster' }] }, { baseUrl: server.baseUrl });
    harness.engine.submit(wrongModel, 'method');
    await harness.engine.idle();
    expect(harness.feedback(wrongModel.workflow.id).at(-1)?.resultDetails).toMatch(/^INCOMPATIBLE_DEVICE/);

    const v2 = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    harness.engine.submit(v2, 'method');
    await harness.engine.idle();
    const v1 = publisher.deliver(fileUpdate('1.0.0', 'v1.bin', appV1), { baseUrl: server.baseUrl });
    harness.engine.submit(v1, 'method');
    await harness.engine.idle();
    expect(harness.feedback(v1.workflow.id).at(-1)).toMatchObject({ status: 'failed', installedVersion: '2.0.0' });
    expect(harness.feedback(v1.workflow.id).at(-1)?.resultDetails).toMatch(/^DOWNGRADE_REFUSED/);

    const signedRollback = publisher.deliver({ ...fileUpdate('1.0.0', 'v1.bin', appV1), rollback: true }, { baseUrl: server.baseUrl });
    harness.engine.submit(signedRollback, 'method');
    await harness.engine.idle();
    expect(harness.feedback(signedRollback.workflow.id).at(-1)).toMatchObject({ status: 'succeeded', installedVersion: '1.0.0' });
  });

  it('cancels a job mid-download, removes the partial file and reports cancelled', async () => {
    harness = startEngine(publisher);
    server.throttle(1024);
    const delivery = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    harness.engine.submit(delivery, 'method');
    for (let i = 0; i < 200 && !harness.feedback(delivery.workflow.id).some((m) => m.step === 'download'); i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(harness.engine.submit({ ...delivery, workflow: { action: 255, id: delivery.workflow.id } }, 'twin')).toMatchObject({ disposition: 'cancelling' });
    await harness.engine.idle();
    expect(steps(harness.feedback(delivery.workflow.id)).slice(-5)).toEqual(['download:started', 'download:cancelled', 'cancel:started', 'cancel:succeeded', 'job:cancelled']);
    expect(harness.feedback(delivery.workflow.id).at(-1)?.resultDetails).toMatch(/^CANCELLED/);
    expect(readdirSync(path.join(harness.root, 'data', 'jobs'))).toEqual([]);
  });

  it('runs scripts per phase, rolls back when install fails, and keeps the reason', async () => {
    harness = startEngine(publisher);
    const log = path.join(harness.root, 'script.log');
    const script = Buffer.from(`#!/bin/sh\necho "$1" >> ${log}\nif [ "$1" = --action-install ]; then echo "disk is on fire" >&2; exit 3; fi\nexit 0\n`);
    server.put('failing.sh', script);
    const delivery = publisher.deliver({
      version: '3.0.0',
      files: { 'failing.sh': script },
      steps: [{ handler: 'microsoft/script:1', files: ['failing.sh'], handlerProperties: { scriptFileName: 'failing.sh' } }],
    }, { baseUrl: server.baseUrl });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback).slice(-5)).toEqual(['install:started', 'install:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: script --action-install ended with exit code 3; last output: disk is on fire/);
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(['--action-install', '--action-cancel']);
    expect(harness.store.jobLog(delivery.workflow.id).some((l) => l.includes('disk is on fire'))).toBe(true);
  });

  it('skips the whole job when every step is already installed', async () => {
    harness = startEngine(publisher);
    const first = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    harness.engine.submit(first, 'method');
    await harness.engine.idle();
    const again = publisher.deliver(fileUpdate(), { baseUrl: server.baseUrl });
    const before = server.requests.length;
    harness.engine.submit(again, 'method');
    await harness.engine.idle();
    expect(steps(harness.feedback(again.workflow.id))).toEqual(['job:started', 'manifest:started', 'manifest:skipped', 'job:succeeded']);
    expect(harness.feedback(again.workflow.id).at(-1)).toMatchObject({ resultCode: 603, installedVersion: '2.0.0' });
    expect(server.requests.length).toBe(before);
  });

  it('asks a script whether its step is installed once it has been downloaded, and skips the step', async () => {
    harness = startEngine(publisher);
    const marker = path.join(harness.root, 'installed-version');
    const log = path.join(harness.root, 'check.log');
    writeFileSync(marker, '4.0.0');
    const script = Buffer.from(`#!/bin/sh\necho "$1" >> ${log}\nif [ "$1" = --action-is-installed ]; then [ "$(cat ${marker})" = "$5" ] && exit 0 || exit 1; fi\nexit 9\n`);
    server.put('check.sh', script);
    const delivery = publisher.deliver({
      version: '4.0.0',
      files: { 'check.sh': script },
      steps: [{ handler: 'microsoft/script:1', files: ['check.sh'], handlerProperties: { scriptFileName: 'check.sh', installedCriteria: '4.0.0' } }],
    }, { baseUrl: server.baseUrl });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    expect(steps(harness.feedback(delivery.workflow.id)).at(-1)).toBe('job:succeeded');
    // Only the is-installed check ran: install (which would exit 9) was skipped.
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(['--action-is-installed']);
  });
});
