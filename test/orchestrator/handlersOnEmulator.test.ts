import type { FeedbackMessage, UpdateDelivery } from '@edge-ota/common';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployModules } from '../../cloud/hubEmulator/test/support/edgeDeployment.ts';
import type { EmulatorFixture } from '../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import { eventually, startEmulator } from '../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import type { EventGridSink } from '../../cloud/hubEmulator/test/support/eventGridSink.ts';
import { startEventGridSink } from '../../cloud/hubEmulator/test/support/eventGridSink.ts';
import type { ArtifactServer } from '../../modules/otaOrchestrator/test/support/artifactServer.ts';
import { startArtifactServer } from '../../modules/otaOrchestrator/test/support/artifactServer.ts';
import type { Publisher } from '../../modules/otaOrchestrator/test/support/signedUpdates.ts';
import { compatibleProperties, createPublisher } from '../../modules/otaOrchestrator/test/support/signedUpdates.ts';
import type { OrchestratorProcess } from '../support/orchestratorProcess.ts';
import { startOrchestratorProcess } from '../support/orchestratorProcess.ts';

// Jobs through the real otaOrchestrator module on the emulator for the cases that need more than one process
// life: an A/B image update whose health check fails (the module "reboots" by exiting, is started again like the
// runtime would, the file boot control plays the bootloader) and a cancel that arrives mid-download.

describe('otaOrchestrator handlers through the module', () => {
  let sink: EventGridSink;
  let hub: EmulatorFixture;
  let server: ArtifactServer;
  let publisher: Publisher;
  let rootsFile: string;
  const running = new Set<OrchestratorProcess>();

  beforeAll(async () => {
    sink = await startEventGridSink();
    hub = await startEmulator({ eventGridWebhooks: [sink.url] });
    server = await startArtifactServer();
    publisher = createPublisher();
    rootsFile = path.join(mkdtempSync(path.join(tmpdir(), 'roots-')), 'roots.json');
    writeFileSync(rootsFile, JSON.stringify([publisher.rootDescription]));
  }, 60_000);
  afterAll(async () => {
    await Promise.all([...running].map((p) => p.stop()));
    await server?.close();
    await hub?.stop();
    await sink?.close();
  });

  async function gateway(deviceId: string, extraEnv: Record<string, string> = {}) {
    await hub.createDevice(deviceId, { edge: true });
    const generations = await deployModules(hub, deviceId, ['otaOrchestrator'], { feedback: 'FROM /messages/modules/otaOrchestrator/outputs/feedback INTO $upstream' });
    const stateDir = mkdtempSync(path.join(tmpdir(), 'orch-handlers-'));
    const env = {
      OTA_STATE_DIR: stateDir,
      OTA_TRUST_ROOTS_FILE: rootsFile,
      OTA_TRUST_ADU_SERVICE_ROOTS: '0',
      OTA_DEVICE_PROPERTIES: JSON.stringify(compatibleProperties),
      OTA_FILE_ROOTS: path.join(stateDir, 'install'),
      ...extraEnv,
    };
    const start = async (): Promise<OrchestratorProcess> => {
      const orchestrator = await startOrchestratorProcess({ hub: hub.hubProcess.info, deviceId, generationId: generations.otaOrchestrator ?? '', env });
      running.add(orchestrator);
      void orchestrator.exited.then(() => running.delete(orchestrator));
      return orchestrator;
    };
    return { stateDir, start };
  }

  const deliver = (deviceId: string, delivery: UpdateDelivery) =>
    hub.service.invokeDeviceMethod(deviceId, 'otaOrchestrator', { methodName: 'applyUpdate', payload: delivery, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 20 });

  const feedbackOf = (jobId: string): FeedbackMessage[] => {
    const byId = new Map<string, FeedbackMessage>();
    for (const event of sink.ofType('DeviceTelemetry')) {
      const body = event.data.body as FeedbackMessage | undefined;
      if (body?.jobId === jobId) byId.set(body.messageId, body);
    }
    return [...byId.values()].sort((a, b) => a.sequence - b.sequence);
  };

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
    server.put('rootfs-2.img', image);
    const delivery = publisher.deliver({
      version: '2.0.0',
      files: { 'rootfs-2.img': image },
      steps: [{ handler: 'edge-ota/ab-image:1', files: ['rootfs-2.img'], handlerProperties: { healthCheck: { command: ['sh', '-c', 'echo services down; exit 1'], timeoutSeconds: 10 } } }],
    }, { baseUrl: server.baseUrl, jobId: 'ab-health-fails' });

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
    server.put('slow.bin', big);
    const delivery = publisher.deliver({
      version: '3.0.0',
      files: { 'slow.bin': big },
      steps: [{ handler: 'edge-ota/file:1', files: ['slow.bin'], handlerProperties: { destination: path.join(gw.stateDir, 'install', 'app') } }],
    }, { baseUrl: server.baseUrl, jobId: 'cancel-mid-download' });
    server.throttle(8 * 1024);
    const orchestrator = await gw.start();
    try {
      await deliver('gw-cancel', delivery);
      await eventually(() => feedbackOf('cancel-mid-download').find((m) => m.step === 'download' && m.status === 'progress'), 30_000, 'download progress');
      const cancel = await hub.service.invokeDeviceMethod('gw-cancel', 'otaOrchestrator', {
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
      server.throttle(0);
      await orchestrator.stop();
    }
  }, 90_000);
});
