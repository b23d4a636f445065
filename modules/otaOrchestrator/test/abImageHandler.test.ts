import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AbImageHandler } from '../src/handlers/abImageHandler.ts';
import { FileBootControl, GrubEnvBootControl, UbootEnvBootControl } from '../src/handlers/bootControl.ts';
import type { ArtifactServer } from './support/artifactServer.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import type { EngineHarness } from './support/engineHarness.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import { createFakeGrub, createFakeUboot } from './support/fakeBootloaders.ts';
import type { Publisher } from './support/signedUpdates.ts';
import { createPublisher } from './support/signedUpdates.ts';
import { SimulatedRebooter } from './support/simulatedRebooter.ts';

// edge-ota/ab-image:1 through the real engine. Slots are plain files, the bootloader is FileBootControl, and a
// reboot is what it is on a device: the process ends (the engine is closed), the bootloader runs
// (FileBootControl.boot()), and a fresh engine with a fresh JobStore starts on the same state directory.

const factoryImage = Buffer.from('factory root file system v1\n'.repeat(1000));
// Larger than the stream chunk size, so writing and reading back go through several chunks.
const newImage = randomBytes(3 * 1024 * 1024 + 123);

describe('A/B image handler', () => {
  let publisher: Publisher;
  let server: ArtifactServer;
  let harness: EngineHarness | undefined;
  let root: string;
  let rebooter: SimulatedRebooter;
  beforeAll(async () => {
    publisher = createPublisher();
    server = await startArtifactServer();
    server.put('rootfs-2.0.0.img', newImage);
  });
  afterAll(async () => {
    await server.close();
  });
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'ab-'));
    rebooter = new SimulatedRebooter();
    writeFileSync(path.join(root, 'slot-a.img'), factoryImage);
    // Slot B holds a longer stale image: the write must not leave its tail behind.
    writeFileSync(path.join(root, 'slot-b.img'), Buffer.alloc(newImage.length + 4096, 0xee));
  });
  afterEach(async () => {
    const open = harness;
    harness = undefined;
    if (open) await rebooter.powerOff(() => open.close());
  });

  const bootFile = () => path.join(root, 'boot.json');
  const slotFile = (slot: 'A' | 'B') => path.join(root, slot === 'A' ? 'slot-a.img' : 'slot-b.img');

  /** The orchestrator process starting on the gateway: a new engine, store, handler and boot control. */
  const startOrchestrator = () => {
    const bootControl = new FileBootControl(bootFile());
    const handler = new AbImageHandler({
      slots: { A: slotFile('A'), B: slotFile('B') },
      bootControl,
      stateDir: path.join(root, 'ab-state'),
      factoryVersion: '1.0.0',
    });
    harness = startEngine(publisher, { root, extraHandlers: [handler], rebooter });
    return harness;
  };
  /** Power cycle: the process ends, the bootloader picks a slot, the orchestrator starts again. */
  const reboot = async () => {
    const open = harness;
    harness = undefined;
    if (open) await rebooter.powerOff(() => open.close());
    const booted = await new FileBootControl(bootFile()).boot();
    return { booted, harness: startOrchestrator() };
  };

  const deliver = (healthCheck?: { command: string[]; timeoutSeconds?: number }) => publisher.deliver({
    version: '2.0.0',
    name: 'GatewayOs',
    files: { 'rootfs-2.0.0.img': newImage },
    steps: [{ handler: 'edge-ota/ab-image:1', files: ['rootfs-2.0.0.img'], ...(healthCheck ? { handlerProperties: { healthCheck } } : {}) }],
  }, { baseUrl: server.baseUrl });

  it('writes the inactive slot, reboots into it once, confirms, checks health, commits and reports the new version', async () => {
    expect(await new FileBootControl(bootFile()).boot()).toBe('A');
    const first = startOrchestrator();
    const delivery = deliver({ command: ['sh', '-c', 'echo all services up'] });
    first.engine.submit(delivery, 'method');
    await rebooter.requested(1);
    expect(first.store.getJob(delivery.workflow.id)?.state).toBe('awaitingReboot');
    // Buffer.equals: a deep toEqual over megabytes is slow.
    expect(readFileSync(slotFile('B')).equals(newImage)).toBe(true);
    expect(readFileSync(slotFile('A')).equals(factoryImage)).toBe(true);
    expect(await new FileBootControl(bootFile()).state()).toMatchObject({ defaultSlot: 'A', tryOnce: 'B', booted: 'A' });

    const { booted, harness: second } = await reboot();
    expect(booted).toBe('B');
    await second.engine.idle();
    const feedback = second.feedback(delivery.workflow.id);
    // The engine reports apply as succeeded twice: once for the reboot request, once for the confirmed boot.
    // The apply is reported once, when the boot into the new slot is confirmed; then the run phase, health, commit.
    expect(steps(feedback).slice(-9)).toEqual(['apply:started', 'apply:succeeded', 'run:started', 'run:succeeded', 'healthCheck:started', 'healthCheck:succeeded', 'commit:started', 'commit:succeeded', 'job:succeeded']);
    expect(feedback.at(-1)).toMatchObject({ status: 'succeeded', installedVersion: '2.0.0' });
    expect(await new FileBootControl(bootFile()).state()).toMatchObject({ defaultSlot: 'B', tryOnce: null, booted: 'B', good: ['A', 'B'] });
    expect(rebooter.requests).toHaveLength(1);
    expect(second.store.jobLog(delivery.workflow.id).some((l) => l.includes('all services up'))).toBe(true);

    // Committed: the next boot stays on B, and the same update again is already installed.
    const { booted: again, harness: third } = await reboot();
    expect(again).toBe('B');
    const repeat = deliver();
    third.engine.submit(repeat, 'method');
    await third.engine.idle();
    expect(steps(third.feedback(repeat.workflow.id))).toEqual(['job:started', 'manifest:started', 'manifest:skipped', 'job:succeeded']);
  });

  it('rolls back once when the new slot fails its health check, reporting the old version that will run', async () => {
    await new FileBootControl(bootFile()).boot();
    const first = startOrchestrator();
    const delivery = deliver({ command: ['sh', '-c', 'echo "database will not start" >&2; exit 4'], timeoutSeconds: 10 });
    first.engine.submit(delivery, 'method');
    await rebooter.requested(1);

    const { booted, harness: second } = await reboot();
    expect(booted).toBe('B');
    await second.engine.idle();
    const feedback = second.feedback(delivery.workflow.id);
    expect(steps(feedback).slice(-5)).toEqual(['healthCheck:started', 'healthCheck:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)).toMatchObject({ status: 'rolledBack', installedVersion: '1.0.0' });
    expect(feedback.at(-1)?.resultDetails).toMatch(/^HEALTH_CHECK_FAILED: health check sh ended with exit code 4: database will not start/);
    expect(await new FileBootControl(bootFile()).state()).toMatchObject({ defaultSlot: 'A', tryOnce: null, bad: ['B'] });

    // The rollback reboots once more, into the old slot, and nothing tries the new one again: no job resumed.
    expect(rebooter.requests).toHaveLength(2);
    const { booted: after, harness: third } = await reboot();
    expect(after).toBe('A');
    await third.engine.idle();
    expect(third.store.activeJobs()).toEqual([]);
    expect(third.feedback(delivery.workflow.id)).toEqual(feedback);
    expect(rebooter.requests).toHaveLength(2);
    const { booted: later } = await reboot();
    expect(later).toBe('A');
  });

  it('rolls back when the bootloader fell back to the old slot before the orchestrator came up', async () => {
    await new FileBootControl(bootFile()).boot();
    const first = startOrchestrator();
    const delivery = deliver();
    first.engine.submit(delivery, 'method');
    await rebooter.requested(1);
    harness = undefined;
    await rebooter.powerOff(() => first.close());
    // The new kernel panicked: the try-once boot was used up, and the following boot falls back.
    const bootloader = new FileBootControl(bootFile());
    expect(await bootloader.boot()).toBe('B');
    expect(await bootloader.boot()).toBe('A');
    const second = startOrchestrator();
    await second.engine.idle();
    const feedback = second.feedback(delivery.workflow.id);
    expect(steps(feedback).slice(-4)).toEqual(['apply:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^APPLY_FAILED: the target booted slot A, not the new slot B: the bootloader fell back/);
    expect(feedback.at(-1)).toMatchObject({ installedVersion: '1.0.0' });
    expect(await bootloader.state()).toMatchObject({ defaultSlot: 'A', bad: ['B'] });
    expect(rebooter.requests).toHaveLength(1);
  });

  it('fails install and rolls back when the slot does not read back as the signed image', async () => {
    await new FileBootControl(bootFile()).boot();
    // /dev/null takes every byte and gives none back: a slot that lies about the write.
    harness = startEngine(publisher, {
      root,
      extraHandlers: [new AbImageHandler({ slots: { A: slotFile('A'), B: '/dev/null' }, bootControl: new FileBootControl(bootFile()), stateDir: path.join(root, 'ab-state'), factoryVersion: '1.0.0' })],
      rebooter,
    });
    const delivery = deliver();
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    const feedback = harness.feedback(delivery.workflow.id);
    expect(steps(feedback).slice(-5)).toEqual(['install:started', 'install:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: slot B \(\/dev\/null\) does not read back as the signed image/);
    expect(feedback.at(-1)).toMatchObject({ installedVersion: '1.0.0' });
    expect(await new FileBootControl(bootFile()).state()).toMatchObject({ defaultSlot: 'A', tryOnce: null, booted: 'A' });
    expect(rebooter.requests).toEqual([]);
  });

  it.each([
    ['GRUB', (dir: string) => {
      const grub = createFakeGrub(dir);
      return { fake: grub, control: new GrubEnvBootControl({ envFile: grub.envFile, binDir: grub.binDir, cmdlineFile: grub.cmdlineFile }) };
    }],
    ['U-Boot', (dir: string) => {
      const uboot = createFakeUboot(dir);
      return { fake: uboot, control: new UbootEnvBootControl({ binDir: uboot.binDir, cmdlineFile: uboot.cmdlineFile }) };
    }],
  ])('updates through %s and rolls back through it when the health check fails', async (_name, create) => {
    const { fake, control } = create(root);
    const orchestrator = () => {
      harness = startEngine(publisher, {
        root,
        extraHandlers: [new AbImageHandler({ slots: { A: slotFile('A'), B: slotFile('B') }, bootControl: control, stateDir: path.join(root, 'ab-state'), factoryVersion: '1.0.0' })],
        rebooter,
      });
      return harness;
    };
    const powerCycle = async () => {
      const open = harness;
      harness = undefined;
      if (open) await rebooter.powerOff(() => open.close());
      return { booted: fake.boot(), harness: orchestrator() };
    };
    fake.boot();
    const good = deliver();
    orchestrator().engine.submit(good, 'method');
    await rebooter.requested(1);
    const { booted, harness: second } = await powerCycle();
    expect(booted).toBe('B');
    await second.engine.idle();
    expect(second.feedback(good.workflow.id).at(-1)).toMatchObject({ status: 'succeeded', installedVersion: '2.0.0' });
    expect(fake.boot()).toBe('B');

    // 3.0.0 goes to slot A, boots, fails its health check: back to B (2.0.0), which the next boot starts.
    server.put('rootfs-3.0.0.img', factoryImage);
    const bad = publisher.deliver({
      version: '3.0.0',
      name: 'GatewayOs',
      files: { 'rootfs-3.0.0.img': factoryImage },
      steps: [{ handler: 'edge-ota/ab-image:1', files: ['rootfs-3.0.0.img'], handlerProperties: { healthCheck: { command: ['false'] } } }],
    }, { baseUrl: server.baseUrl });
    second.engine.submit(bad, 'method');
    await rebooter.requested(2);
    const { booted: tried, harness: third } = await powerCycle();
    expect(tried).toBe('A');
    await third.engine.idle();
    expect(third.feedback(bad.workflow.id).at(-1)).toMatchObject({ status: 'rolledBack', installedVersion: '2.0.0' });
    expect(await control.activeSlot()).toBe('B');
    expect(fake.boot()).toBe('B');
    expect(fake.boot()).toBe('B');
    // Two boots into new slots, and one back into B after the failed health check of the second update.
    expect(rebooter.requests).toHaveLength(3);
  });
});
