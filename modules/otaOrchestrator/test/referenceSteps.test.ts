import { OtaError, formatUpdateId } from '@edge-ota/common';
import type { InlineStep } from '@edge-ota/common';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { PhaseOutcome, StepContext, UpdateHandler } from '../src/handlers/updateHandler.ts';
import { done } from '../src/handlers/updateHandler.ts';
import type { ArtifactServer } from './support/artifactServer.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import type { ChildDocument, ComposedSpec, PayloadFile } from './support/composedUpdates.ts';
import { childDocument, childManifest, childUpdate, composedDelivery, fileEntry, servedPath } from './support/composedUpdates.ts';
import type { EngineHarness } from './support/engineHarness.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import type { Publisher } from './support/signedUpdates.ts';
import { createPublisher } from './support/signedUpdates.ts';
import { logLines, loggingScript, scriptStep } from './support/scriptSteps.ts';

// ADU reference steps through the real engine: child update manifests fetched over loopback HTTP and checked
// against the signed parent, child steps run by the real script and file handlers in place of the reference step,
// the per-step journal in SQLite across a restart, and rollback over parent and child steps.

const happy = ['job:started', 'manifest:started', 'manifest:succeeded', 'download:started', 'download:succeeded', 'validate:started',
  'validate:succeeded', 'install:started', 'install:succeeded', 'apply:started', 'apply:succeeded', 'run:started', 'run:succeeded',
  'healthCheck:started', 'healthCheck:succeeded', 'commit:started', 'commit:succeeded', 'job:succeeded'];
/** ADU's handler id for the script handler: these are ADU-shaped updates. */
const adu = (file: PayloadFile): InlineStep => scriptStep(file, 'microsoft/script:1');

const failedAtManifest = ['job:started', 'manifest:started', 'manifest:failed', 'job:failed'];

/** Stands for a process that dies in the middle of the install: the first install only ends when the engine stops. */
class InterruptedOnce implements UpdateHandler {
  readonly ids = ['test/interrupted-once:1'];
  readonly needsLocalFiles = true;
  /** `resumed` of every install call. */
  readonly installs: boolean[] = [];
  /** The update each install call was told the step belongs to. */
  readonly updates: string[] = [];

  isInstalled(): Promise<boolean> {
    return Promise.resolve(false);
  }

  install(context: StepContext): Promise<PhaseOutcome> {
    this.installs.push(context.resumed);
    this.updates.push(formatUpdateId(context.updateId));
    if (this.installs.length > 1) return Promise.resolve(done());
    return new Promise((_resolve, reject) => context.signal.addEventListener('abort', () => reject(new OtaError('INSTALL_FAILED', 'killed')), { once: true }));
  }

  apply(): Promise<PhaseOutcome> {
    return Promise.resolve(done());
  }

  rollback(): Promise<PhaseOutcome> {
    return Promise.resolve(done());
  }
}

describe('reference steps (ADU child updates)', () => {
  let publisher: Publisher;
  let server: ArtifactServer;
  let harness: EngineHarness;
  beforeAll(async () => {
    publisher = createPublisher();
    server = await startArtifactServer();
  });
  afterAll(async () => {
    await server.close();
  });
  afterEach(async () => {
    await harness?.close();
  });

  const requestsFor = (since: number, file: { id: string; name: string }): number =>
    server.requests.slice(since).filter((r) => r.path === `/files/${servedPath(file)}`).length;

  it('runs the parent step and then the child steps in order, with the child files downloaded and verified', async () => {
    harness = startEngine(publisher);
    const log = path.join(harness.root, 'steps.log');
    const motorDir = path.join(harness.installRoot, 'motor');
    const pre = loggingScript('happy-pre', 'pre.sh', log);
    const firmware = { id: 'happy-fw', name: 'motor.bin', data: Buffer.from('motor firmware 1.1\n'.repeat(2000)) };
    const motor = loggingScript('happy-motor', 'motor.sh', log,
      `if [ "$1" = --action-install ] && [ -f ${motorDir}/motor.bin ]; then echo "motor.sh finds motor.bin installed" >> ${log}; fi\n`);
    const child = childUpdate({
      id: 'happy-child', name: 'motor.updatemanifest.json', update: 'Motor', version: '1.1.0',
      steps: [{ handler: 'edge-ota/file:1', files: [firmware.id], handlerProperties: { destination: motorDir } }, adu(motor)],
      files: [firmware, motor],
    });
    const before = server.requests.length;
    const delivery = composedDelivery(publisher, server, { version: '5.0.0', files: [pre], steps: [adu(pre), child] });
    expect(harness.engine.submit(delivery, 'method')).toMatchObject({ accepted: true, disposition: 'queued' });
    await harness.engine.idle();

    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback)).toEqual(happy);
    expect(feedback.at(-1)).toMatchObject({ resultCode: 1, installedVersion: '5.0.0' });
    expect(logLines(log)).toEqual(['pre.sh --action-install', 'motor.sh --action-install', 'motor.sh finds motor.bin installed', 'pre.sh --action-apply', 'motor.sh --action-apply']);
    expect(readFileSync(path.join(motorDir, 'motor.bin'))).toEqual(firmware.data);
    for (const file of [pre, firmware, motor, child]) expect(requestsFor(before, file), file.name).toBe(1);
    // The child's second step is step 2 of the job: its log lines and work folder carry that index.
    const motorRun = harness.store.jobLog(delivery.workflow.id).filter((l) => l.startsWith('step 2 (step 1 of Contoso/Motor@1.1.0, reference step 1): run motor.sh --action-install'));
    expect(motorRun).toHaveLength(1);
    expect(motorRun[0]).toMatch(/--work-folder \S+\/work\/2$/);
    expect(harness.store.installed('gw-1')).toMatchObject({ version: '5.0.0', updateId: { name: 'Composed' } });
  });

  it('fails a child manifest whose bytes do not match the signed parent, before anything is downloaded or installed', async () => {
    harness = startEngine(publisher);
    const log = path.join(harness.root, 'steps.log');
    const pre = loggingScript('tamper-pre', 'pre.sh', log);
    const motor = loggingScript('tamper-motor', 'motor.sh', log);
    const child = childUpdate({ id: 'tamper-child', name: 'motor.updatemanifest.json', update: 'Motor', version: '1.1.0', steps: [adu(motor)], files: [motor] });
    const before = server.requests.length;
    const delivery = composedDelivery(publisher, server, { version: '5.0.1', files: [pre], steps: [adu(pre), child] });
    // Same length, one changed version: only the hash can tell.
    const tampered = Buffer.from(child.bytes.toString('utf8').replace('"1.1.0"', '"9.9.9"'), 'utf8');
    expect(tampered.length).toBe(child.bytes.length);
    server.put(servedPath(child), tampered);
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();

    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback)).toEqual(failedAtManifest);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^DOWNLOAD_HASH_MISMATCH: \/instructions\/steps\/1: child manifest motor\.updatemanifest\.json: /);
    expect(logLines(log)).toEqual([]);
    expect(requestsFor(before, pre) + requestsFor(before, motor)).toBe(0);
    expect(harness.store.installed('gw-1')).toBeUndefined();
  });

  const badPre = (log: string): PayloadFile => loggingScript('bad-pre', 'pre.sh', log);
  const someFile = (id: string, name: string): PayloadFile => ({ id, name, data: Buffer.from(`content of ${id}\n`) });
  const badChildren: Array<[string, (pre: PayloadFile) => Pick<ComposedSpec, 'steps' | 'withoutUrls'>, RegExp]> = [
    ['a child that is itself a detached pointer', () => ({
      steps: [childDocument('bad-pointer', 'pointer.json', {
        manifestVersion: '4', updateId: { provider: 'Contoso', name: 'Motor', version: '1.0' }, detachedManifestFileId: 'bad-inner',
        files: { 'bad-inner': fileEntry({ name: 'inner.json', data: Buffer.from('{}') }) },
      })],
    }), /^UPDATE_MANIFEST_INVALID: \/instructions\/steps\/1: child manifest pointer\.json: .*itself a pointer/],
    ['a child with a reference step of its own', () => ({
      steps: [childDocument('bad-nested', 'nested.json', {
        ...childManifest({ update: 'Motor', version: '1.0', steps: [], files: [] }),
        instructions: { steps: [{ type: 'reference', detachedManifestFileId: 'bad-grandchild' }] },
        files: { 'bad-grandchild': fileEntry({ name: 'grandchild.json', data: Buffer.from('{}') }) },
      })],
    }), /^UPDATE_MANIFEST_INVALID: \/instructions\/steps\/1: child manifest nested\.json has a reference step at \/instructions\/steps\/0; a child update holds inline steps only/],
    ['a child file id that names a different file of the parent', (pre) => {
      const other = someFile(pre.id, 'other.sh');
      return { steps: [childUpdate({ id: 'bad-clash', name: 'clash.json', update: 'Motor', version: '1.0', steps: [adu(other)], files: [other] })] };
    }, /^MANIFEST_FILE_ID_CONFLICT: \/instructions\/steps\/1: .*"bad-pre" as other\.sh, but the parent manifest declares it as a different file \(pre\.sh\)/],
    ['a child file id that names a different file of another child', () => {
      const a = someFile('bad-shared', 'a.bin');
      const b = someFile('bad-shared', 'b.bin');
      return {
        steps: [
          childUpdate({ id: 'bad-first', name: 'first.json', update: 'First', version: '1.0', steps: [{ handler: 'edge-ota/file:1', files: [a.id] }], files: [a] }),
          childUpdate({ id: 'bad-second', name: 'second.json', update: 'Second', version: '1.0', steps: [{ handler: 'edge-ota/file:1', files: [b.id] }], files: [b] }),
        ],
      };
    }, /^MANIFEST_FILE_ID_CONFLICT: \/instructions\/steps\/2: .*but the child manifest of reference step 1 declares it as a different file \(a\.bin\)/],
    ['a child file without a download URL', () => {
      const firmware = someFile('bad-nourl-fw', 'motor.bin');
      return {
        steps: [childUpdate({ id: 'bad-nourl', name: 'nourl.json', update: 'Motor', version: '1.0', steps: [{ handler: 'edge-ota/file:1', files: [firmware.id] }], files: [firmware] })],
        withoutUrls: [firmware.id],
      };
    }, /^MANIFEST_FILE_REFERENCE_INVALID: \/instructions\/steps\/1 -> nourl\.json\/instructions\/steps\/0\/files: no download URL for file bad-nourl-fw/],
    ['a child manifest without a download URL', () => ({
      steps: [childUpdate({ id: 'bad-nomanifesturl', name: 'lost.json', update: 'Motor', version: '1.0', steps: [{ handler: 'edge-ota/file:1', files: ['bad-x'] }], files: [someFile('bad-x', 'x.bin')] })],
      withoutUrls: ['bad-nomanifesturl'],
    }), /^MANIFEST_FILE_REFERENCE_INVALID: \/instructions\/steps\/1: no download URL for child manifest lost\.json/],
    // Hostile: the reference points at a binary, or the child names a file that would land outside its folder.
    ['a reference to a file that is not JSON', () => ({
      steps: [childDocument('bad-binary', 'firmware.json', Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0xff, 0xfe]))],
    }), /^MANIFEST_NOT_JSON: \/instructions\/steps\/1: child manifest firmware\.json: /],
    ['a child file name that climbs out of its folder', () => {
      const escape = someFile('bad-escape', '../escape.sh');
      return { steps: [childUpdate({ id: 'bad-climb', name: 'climb.json', update: 'Motor', version: '1.0', steps: [adu(escape)], files: [escape] })] };
    }, /^MANIFEST_FILE_NAME_UNSAFE: \/instructions\/steps\/1: child manifest climb\.json: /],
  ];

  it.each(badChildren)('refuses %s with a clear code and installs nothing', async (_name, build, code) => {
    harness = startEngine(publisher);
    const log = path.join(harness.root, 'steps.log');
    const pre = badPre(log);
    const spec = build(pre);
    const delivery = composedDelivery(publisher, server, { version: '5.1.0', files: [pre], steps: [adu(pre), ...spec.steps], ...(spec.withoutUrls ? { withoutUrls: spec.withoutUrls } : {}) });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback)).toEqual(failedAtManifest);
    expect(feedback.at(-1)?.resultDetails).toMatch(code);
    expect(feedback.at(-1)?.extendedResultCode).toBeGreaterThan(0);
    expect(logLines(log)).toEqual([]);
    expect(existsSync(harness.installRoot)).toBe(false);
  });

  it('skips a child that is not for the target (ADU: no matching components), runs the rest and says so in the job log', async () => {
    harness = startEngine(publisher);
    const log = path.join(harness.root, 'steps.log');
    const pre = loggingScript('compat-pre', 'pre.sh', log);
    const firmware = someFile('compat-fw', 'motor.bin');
    // A component update: its handler is not even known here, which does not matter for a child that is skipped.
    const child = childUpdate({
      id: 'compat-child', name: 'motor.json', update: 'Motor', version: '2.0.0', compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Motor' }],
      steps: [{ handler: 'contoso/motor:1', files: [firmware.id] }], files: [firmware],
    });
    const before = server.requests.length;
    const delivery = composedDelivery(publisher, server, { version: '5.2.0', files: [pre], steps: [adu(pre), child] });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();

    expect(steps(harness.feedback(delivery.workflow.id))).toEqual(happy);
    expect(logLines(log)).toEqual(['pre.sh --action-install', 'pre.sh --action-apply']);
    expect(requestsFor(before, child)).toBe(1);
    expect(requestsFor(before, firmware)).toBe(0);
    const jobLog = harness.store.jobLog(delivery.workflow.id);
    expect(jobLog.filter((l) => l.startsWith('reference step 1 (Contoso/Motor@2.0.0) is not for gw-1: its steps 1 are skipped and count as installed'))).toHaveLength(1);
    expect(jobLog.some((l) => l.includes('deviceModel="Motor", device has "Gateway"'))).toBe(true);
  });

  it('counts an update whose only step is a child for another target as installed, as ADU does', async () => {
    harness = startEngine(publisher);
    const firmware = someFile('compat-only-fw', 'motor.bin');
    const child = childUpdate({
      id: 'compat-only-child', name: 'motor.json', update: 'Motor', version: '2.0.0', compatibility: [{ deviceModel: 'Motor' }],
      steps: [{ handler: 'contoso/motor:1', files: [firmware.id] }], files: [firmware],
    });
    const delivery = composedDelivery(publisher, server, { version: '5.3.0', steps: [child] });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback)).toEqual(['job:started', 'manifest:started', 'manifest:skipped', 'job:succeeded']);
    expect(feedback.at(-1)).toMatchObject({ resultCode: 603, installedVersion: '5.3.0' });
  });

  it('resumes after a restart in the middle of the child steps without repeating a finished one', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'reference-restart-'));
    const interrupted = new InterruptedOnce();
    const log = path.join(root, 'steps.log');
    const pre = loggingScript('restart-pre', 'pre.sh', log);
    const motor = loggingScript('restart-motor', 'motor.sh', log);
    const blob = someFile('restart-blob', 'blob.bin');
    const child = childUpdate({
      id: 'restart-child', name: 'motor.json', update: 'Motor', version: '1.2.0',
      steps: [adu(motor), { handler: 'test/interrupted-once:1', files: [blob.id] }], files: [motor, blob],
    });
    const before = server.requests.length;
    const delivery = composedDelivery(publisher, server, { version: '5.4.0', files: [pre], steps: [adu(pre), child] });

    harness = startEngine(publisher, { root, extraHandlers: [interrupted] });
    harness.engine.submit(delivery, 'method');
    for (let i = 0; i < 500 && interrupted.installs.length === 0; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(interrupted.installs).toEqual([false]);
    expect(logLines(log)).toEqual(['pre.sh --action-install', 'motor.sh --action-install']);
    // The process "dies" in the second child step; a new one starts on the same journal and job directory.
    await harness.close();
    harness = startEngine(publisher, { root, extraHandlers: [interrupted] });
    await harness.engine.idle();

    expect(interrupted.installs).toEqual([false, true]);
    // A child's step belongs to the child update (the version a handler records), not to the parent.
    expect(interrupted.updates).toEqual(['Contoso/Motor@1.2.0', 'Contoso/Motor@1.2.0']);
    expect(logLines(log)).toEqual(['pre.sh --action-install', 'motor.sh --action-install', 'pre.sh --action-apply', 'motor.sh --action-apply']);
    expect(steps(harness.feedback(delivery.workflow.id))).toEqual(happy);
    // The child manifest was kept in the job directory and re-checked there, not fetched again.
    expect(requestsFor(before, child)).toBe(1);
  });

  it('rolls back, newest first, every step that was installed when a child step fails, the parent step included', async () => {
    harness = startEngine(publisher);
    const log = path.join(harness.root, 'steps.log');
    const pre = loggingScript('rollback-pre', 'pre.sh', log);
    const motor = loggingScript('rollback-motor', 'motor.sh', log);
    const broken = loggingScript('rollback-broken', 'broken.sh', log, 'if [ "$1" = --action-install ]; then echo "flash write error" >&2; exit 5; fi\n');
    const child: ChildDocument = childUpdate({
      id: 'rollback-child', name: 'motor.json', update: 'Motor', version: '1.3.0', steps: [adu(motor), adu(broken)], files: [motor, broken],
    });
    const delivery = composedDelivery(publisher, server, { version: '5.5.0', files: [pre], steps: [adu(pre), child] });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();

    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback).slice(-5)).toEqual(['install:started', 'install:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: script --action-install ended with exit code 5; last output: flash write error/);
    expect(logLines(log)).toEqual([
      'pre.sh --action-install', 'motor.sh --action-install', 'broken.sh --action-install',
      'broken.sh --action-cancel', 'motor.sh --action-cancel', 'pre.sh --action-cancel',
    ]);
    expect(harness.store.installed('gw-1')).toBeUndefined();
  });
});
