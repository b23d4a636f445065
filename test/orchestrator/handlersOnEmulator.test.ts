import type { FeedbackMessage, UpdateDelivery } from '@edge-ota/common';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import type { GatewayUnderTest, OrchestratorWorld } from './support/orchestratorWorld.ts';
import { startOrchestratorWorld } from './support/orchestratorWorld.ts';

// Jobs through the real otaOrchestrator module on the emulator for the cases that need more than one process
// life: an A/B image update whose health check fails (the module "reboots" by exiting, is started again like the
// runtime would, the file boot control plays the bootloader) and a cancel that arrives mid-download.

describe('otaOrchestrator handlers through the module', () => {
  let world: OrchestratorWorld;

  beforeAll(async () => {
    world = await startOrchestratorWorld();
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
  });

  const gateway = (deviceId: string, extraEnv: Record<string, string> = {}): Promise<GatewayUnderTest> => world.gateway(deviceId, extraEnv);
  const deliver = (deviceId: string, delivery: UpdateDelivery): Promise<unknown> => world.deliver(deviceId, delivery);
  const feedbackOf = (jobId: string): FeedbackMessage[] => world.feedbackOf(jobId);

  it('rolls an A/B image back when the new slot fails its health check, across the reboot', async () => {
    const slotsDir = mkdtempSync(path.join(tmpdir(), 'slots-'));
    const slotA = path.join(slotsDir, 'slot-a.img');
    const slotB = path.join(slotsDir, 'slot-b.img');
    writeFileSync(slotA, 'factory image');
    writeFileSync(slotB, '');
    const gw = await gateway('gw-ab', {
      OTA_AB_SLOT_A: slotA,
      OTA_AB_SLOT_B: slotB,
      OTA_BOOT_CONTROL: 'file',
      OTA_FACTORY_VERSION: '1.0.0',
      OTA_REBOOT_COMMAND: 'exit-process',
    });
    const image = Buffer.from('new root file system\n'.repeat(4000));
    world.server.put('rootfs-2.img', image);
    const delivery = world.publisher.deliver({
      version: '2.0.0',
      files: { 'rootfs-2.img': image },
      steps: [{ handler: 'edge-ota/ab-image:1', files: ['rootfs-2.img'], handlerProperties: { healthCheck: { command: ['sh', '-c', 'echo services down; exit 1'], timeoutSeconds: 10 } } }],
    }, { baseUrl: world.server.baseUrl, jobId: 'ab-health-fails' });

    const first = await gw.start();
    await deliver('gw-ab', delivery);
    // The apply asks for a reboot: the module ends itself, as a real reboot would end it.
    const ended = await Promise.race([first.exited, new Promise<never>((_r, reject) => setTimeout(() => reject(new Error(`no reboot:\n${first.lines.slice(-15).join('\n')}`)), 60_000))]);
    expect(ended.code).toBe(0);
    expect(first.lines.some((l) => l.includes('reboot requested'))).toBe(true);
    expect(readFileSync(slotB)).toEqual(image);

    // Started again: the file boot control boots the try-once slot B, the health check fails, rollback to A.
    const second = await gw.start();
    const feedback = await eventually(() => {
      const got = feedbackOf('ab-health-fails');
      return got.some((m) => m.step === 'job' && m.status !== 'started') ? got : undefined;
    }, 60_000, 'the A/B job to end').catch((error: Error) => {
      throw new Error(`${error.message}\n${second.lines.slice(-15).join('\n')}`);
    });
    const steps = feedback.filter((m) => m.status !== 'progress').map((m) => `${m.step}:${m.status}`);
    expect(steps.slice(-6)).toEqual(['run:succeeded', 'healthCheck:started', 'healthCheck:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)).toMatchObject({ installedVersion: '1.0.0' });
    expect(feedback.map((m) => m.sequence)).toEqual(feedback.map((_m, i) => i));
    // Rolled back once: the module reboots (exits) into the old slot, and nothing is tried again.
    expect((await second.exited).code).toBe(0);
    const third = await gw.start();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(feedbackOf('ab-health-fails').filter((m) => m.step === 'job' && m.status === 'rolledBack')).toHaveLength(1);
    const boot = JSON.parse(readFileSync(path.join(gw.stateDir, 'boot.json'), 'utf8')) as { booted: string; bad: string[] };
    expect(boot.booted).toBe('A');
    expect(boot.bad).toContain('B');
    await third.stop();
  }, 150_000);

  it('cancels a job mid-download through the module and reports it cancelled', async () => {
    const gw = await gateway('gw-cancel');
    const big = Buffer.alloc(2 * 1024 * 1024, 0x41);
    world.server.put('slow.bin', big);
    const delivery = world.publisher.deliver({
      version: '3.0.0',
      files: { 'slow.bin': big },
      steps: [{ handler: 'edge-ota/file:1', files: ['slow.bin'], handlerProperties: { destination: path.join(gw.stateDir, 'install', 'app') } }],
    }, { baseUrl: world.server.baseUrl, jobId: 'cancel-mid-download' });
    world.server.throttle(8 * 1024);
    const orchestrator = await gw.start();
    try {
      await deliver('gw-cancel', delivery);
      await eventually(() => feedbackOf('cancel-mid-download').find((m) => m.step === 'download' && m.status === 'progress'), 30_000, 'download progress');
      const cancel = await world.hub.service.invokeDeviceMethod('gw-cancel', 'otaOrchestrator', {
        methodName: 'applyUpdate',
        payload: { ...delivery, workflow: { action: 255, id: 'cancel-mid-download' } },
        responseTimeoutInSeconds: 10,
      });
      expect(cancel.result).toMatchObject({ status: 200, payload: { disposition: 'cancelling' } });
      const feedback = await eventually(() => {
        const got = feedbackOf('cancel-mid-download');
        return got.some((m) => m.step === 'job' && m.status === 'cancelled') ? got : undefined;
      }, 30_000, 'the job to be cancelled');
      const steps = feedback.filter((m) => m.status !== 'progress').map((m) => `${m.step}:${m.status}`);
      expect(steps.slice(-3)).toEqual(['cancel:started', 'cancel:succeeded', 'job:cancelled']);
      expect(feedback.at(-1)?.resultDetails).toMatch(/^CANCELLED/);
    } finally {
      world.server.throttle(0);
      await orchestrator.stop();
    }
  }, 90_000);
});
