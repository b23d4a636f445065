// Both real modules on one gateway of the hub emulator: a signed update for an MCU reaches otaOrchestrator, whose
// edge-ota/mcu:1 handler calls serialTranslator's flashFirmware; the translator's mcuProgress comes back over the
// edgeHub route to the orchestrator's input, and the orchestrator's feedback reaches the cloud with the translator's
// result code. The MCU is the host build of the firmware sample on a socat pty pair.
import type { FeedbackMessage } from '@edge-ota/common';
import { isTerminalFeedback, resultCodes } from '@edge-ota/common';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
import { buildMcubootImage } from '../../modules/serialTranslator/src/mcubootImageBuilder.ts';
import { startHostDevice, stopAll } from '../../modules/serialTranslator/test/support/hostFirmware.ts';
import type { HostDevice } from '../../modules/serialTranslator/test/support/hostFirmware.ts';
import { HEALTH_FAIL_MARKER } from '../../modules/serialTranslator/test/support/simulatedDevice.ts';
import type { OrchestratorProcess } from '../support/orchestratorProcess.ts';
import { startOrchestratorProcess } from '../support/orchestratorProcess.ts';
import { reportedFirmware } from './support/translatorObservation.ts';
import type { TranslatorProcess } from './support/translatorProcess.ts';
import { startTranslatorProcess } from './support/translatorProcess.ts';

const GATEWAY = 'gw-ota-mcu';
const MCU = 'mcu-ota';
const mcuKeys = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

describe('otaOrchestrator hands an MCU update to serialTranslator', () => {
  let sink: EventGridSink;
  let hub: EmulatorFixture;
  let server: ArtifactServer;
  let publisher: Publisher;
  let device: HostDevice;
  let orchestrator: OrchestratorProcess | undefined;
  let translator: TranslatorProcess | undefined;
  let dir: string;

  const feedbackOf = (jobId: string): FeedbackMessage[] => {
    const byId = new Map<string, FeedbackMessage>();
    for (const event of sink.ofType('DeviceTelemetry')) {
      const body = event.data.body as FeedbackMessage | undefined;
      if (body?.jobId === jobId && body.messageId) byId.set(body.messageId, body);
    }
    return [...byId.values()].sort((a, b) => a.sequence - b.sequence);
  };

  const deliverFirmware = (jobId: string, version: string, image: Buffer): void => {
    const fileName = `${jobId}.signed.bin`;
    server.put(fileName, image);
    const delivery = publisher.deliver(
      { version, name: 'McuFirmware', files: { [fileName]: image }, steps: [{ handler: 'edge-ota/mcu:1', files: [fileName], handlerProperties: { version } }] },
      { baseUrl: server.baseUrl, jobId, targetId: MCU },
    );
    void hub.service
      .invokeDeviceMethod(GATEWAY, 'otaOrchestrator', { methodName: 'applyUpdate', payload: delivery, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 20 })
      .catch(() => undefined);
  };

  beforeAll(async () => {
    sink = await startEventGridSink();
    hub = await startEmulator({ eventGridWebhooks: [sink.url] });
    server = await startArtifactServer();
    publisher = createPublisher();
    await hub.createDevice(GATEWAY, { edge: true });
    const generations = await deployModules(hub, GATEWAY, ['otaOrchestrator', 'serialTranslator'], {
      feedback: 'FROM /messages/modules/otaOrchestrator/outputs/feedback INTO $upstream',
      mcuProgress: 'FROM /messages/modules/serialTranslator/outputs/mcuProgress INTO BrokeredEndpoint("/modules/otaOrchestrator/inputs/mcuProgress")',
    });
    const { key } = await hub.createDevice(MCU, { parent: GATEWAY });
    dir = mkdtempSync(path.join(tmpdir(), 'ota-to-mcu-'));
    writeFileSync(path.join(dir, 'mcu-keys.json'), JSON.stringify({ [MCU]: key }));
    writeFileSync(path.join(dir, 'roots.json'), JSON.stringify([publisher.rootDescription]));
    device = await startHostDevice();
    const publicKey = mcuKeys.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    await hub.registry.updateModuleTwin(GATEWAY, 'serialTranslator', { properties: { desired: { mcus: { [MCU]: { port: device.pty.hostPath, publicKey } } } } }, '*');
    translator = await startTranslatorProcess({
      hub: hub.hubProcess.info,
      deviceId: GATEWAY,
      generationId: generations.serialTranslator ?? '',
      env: { SERIAL_STATE_DIR: path.join(dir, 'translator'), SERIAL_MCU_KEYS_FILE: path.join(dir, 'mcu-keys.json') },
    });
    orchestrator = await startOrchestratorProcess({
      hub: hub.hubProcess.info,
      deviceId: GATEWAY,
      generationId: generations.otaOrchestrator ?? '',
      env: {
        OTA_STATE_DIR: path.join(dir, 'orchestrator'),
        OTA_TRUST_ROOTS_FILE: path.join(dir, 'roots.json'),
        OTA_TRUST_ADU_SERVICE_ROOTS: '0',
        OTA_DEVICE_PROPERTIES: JSON.stringify(compatibleProperties),
        OTA_TARGETS: JSON.stringify({ [MCU]: { properties: compatibleProperties } }),
        OTA_FILE_ROOTS: path.join(dir, 'install'),
      },
    });
  }, 120_000);

  afterAll(async () => {
    await orchestrator?.stop();
    await translator?.stop();
    await stopAll();
    await server?.close();
    await hub?.stop();
    await sink?.close();
    if (device) rmSync(device.dir, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('installs a good image: the job succeeds and the MCU twin shows the new version', async () => {
    const image = Buffer.from(buildMcubootImage({ payload: Buffer.alloc(32 * 1024, 'good '), version: '1.1.0', signingKey: mcuKeys.privateKey }));
    deliverFirmware('ota-mcu-good', '1.1.0', image);
    const feedback = await eventually(() => {
      const got = feedbackOf('ota-mcu-good');
      return got.some((m) => isTerminalFeedback(m)) ? got : undefined;
    }, 60_000, 'ota-mcu-good to end');
    expect(feedback.at(-1)).toMatchObject({ step: 'job', status: 'succeeded' });
    await eventually(async () => ((await reportedFirmware(hub, MCU)).currentFwVersion === '1.1.0' ? true : undefined), 15_000, 'MCU twin on 1.1.0');
  }, 90_000);

  it('an image that fails its health check ends the job with the translator code, and the MCU back on the old version', async () => {
    const image = Buffer.from(buildMcubootImage({ payload: Buffer.concat([Buffer.from(HEALTH_FAIL_MARKER), Buffer.alloc(8 * 1024)]), version: '1.2.0', signingKey: mcuKeys.privateKey }));
    deliverFirmware('ota-mcu-bad', '1.2.0', image);
    const feedback = await eventually(() => {
      const got = feedbackOf('ota-mcu-bad');
      return got.some((m) => isTerminalFeedback(m)) ? got : undefined;
    }, 60_000, 'ota-mcu-bad to end');
    const code = resultCodes.MCU_HEALTH_ECHO_FAILED.extendedResultCode;
    expect(feedback.filter((m) => m.extendedResultCode !== 0).map((m) => `${m.step}:${m.status}:${m.extendedResultCode}`)).toEqual([`install:failed:${code}`, `job:rolledBack:${code}`]);
    await eventually(async () => {
      const firmware = await reportedFirmware(hub, MCU);
      return firmware.currentFwVersion === '1.1.0' && firmware.fwUpdateStatus === 'rolledback' ? true : undefined;
    }, 15_000, 'MCU twin rolled back to 1.1.0');
  }, 90_000);
});
