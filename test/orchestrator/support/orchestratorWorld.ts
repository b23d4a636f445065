import type { FeedbackMessage, UpdateDelivery } from '@edge-ota/common';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { deployModules } from '../../../cloud/hubEmulator/test/support/edgeDeployment.ts';
import type { EmulatorFixture } from '../../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import { startEmulator } from '../../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import type { EventGridSink } from '../../../cloud/hubEmulator/test/support/eventGridSink.ts';
import { startEventGridSink } from '../../../cloud/hubEmulator/test/support/eventGridSink.ts';
import type { ArtifactServer } from '../../../modules/otaOrchestrator/test/support/artifactServer.ts';
import { startArtifactServer } from '../../../modules/otaOrchestrator/test/support/artifactServer.ts';
import type { Publisher } from '../../../modules/otaOrchestrator/test/support/signedUpdates.ts';
import { compatibleProperties, createPublisher } from '../../../modules/otaOrchestrator/test/support/signedUpdates.ts';
import type { OrchestratorProcess } from '../../support/orchestratorProcess.ts';
import { startOrchestratorProcess } from '../../support/orchestratorProcess.ts';

// What the tests of the real otaOrchestrator process on the emulator share: an emulator whose cloud events reach
// an Event Grid sink, an artifact server, a publisher whose root the gateways trust, gateways deployed with the
// feedback route of deployment/, module processes that are all stopped at the end, direct-method delivery, and the
// feedback of a job as it reached the cloud.

/** The feedback route as deployment/deployment.template.json has it. */
export const FEEDBACK_ROUTE = "FROM /messages/* WHERE $connectionModuleId = 'otaOrchestrator' INTO $upstream";

export interface GatewayUnderTest {
  deviceId: string;
  generationId: string;
  stateDir: string;
  env: Record<string, string>;
  /** Starts the module process (again) with the gateway's environment plus `extraEnv`. */
  start(extraEnv?: Record<string, string>): Promise<OrchestratorProcess>;
}

export interface OrchestratorWorld {
  readonly sink: EventGridSink;
  readonly hub: EmulatorFixture;
  readonly server: ArtifactServer;
  readonly publisher: Publisher;
  gateway(deviceId: string, extraEnv?: Record<string, string>): Promise<GatewayUnderTest>;
  /** applyUpdate by direct method; IoT Hub waits up to 20 s for the module to (re)subscribe. */
  deliver(deviceId: string, delivery: UpdateDelivery): Promise<unknown>;
  /** The job's feedback as it reached the cloud, duplicates dropped by message id, in sequence order. */
  feedbackOf(jobId: string): FeedbackMessage[];
  stop(): Promise<void>;
}

export async function startOrchestratorWorld(): Promise<OrchestratorWorld> {
  const sink = await startEventGridSink();
  const hub = await startEmulator({ eventGridWebhooks: [sink.url] });
  const server = await startArtifactServer();
  const publisher = createPublisher();
  const rootsFile = path.join(mkdtempSync(path.join(tmpdir(), 'roots-')), 'roots.json');
  writeFileSync(rootsFile, JSON.stringify([publisher.rootDescription]));
  const running = new Set<OrchestratorProcess>();

  return {
    sink,
    hub,
    server,
    publisher,
    async gateway(deviceId, extraEnv = {}) {
      await hub.createDevice(deviceId, { edge: true });
      const generations = await deployModules(hub, deviceId, ['otaOrchestrator'], { feedback: FEEDBACK_ROUTE });
      const stateDir = mkdtempSync(path.join(tmpdir(), `orch-${deviceId}-`));
      const generationId = generations.otaOrchestrator ?? '';
      const env = {
        OTA_STATE_DIR: stateDir,
        OTA_TRUST_ROOTS_FILE: rootsFile,
        OTA_TRUST_ADU_SERVICE_ROOTS: '0',
        OTA_DEVICE_PROPERTIES: JSON.stringify(compatibleProperties),
        OTA_FILE_ROOTS: path.join(stateDir, 'install'),
        ...extraEnv,
      };
      return {
        deviceId,
        generationId,
        stateDir,
        env,
        async start(more = {}) {
          const orchestrator = await startOrchestratorProcess({ hub: hub.hubProcess.info, deviceId, generationId, env: { ...env, ...more } });
          running.add(orchestrator);
          void orchestrator.exited.then(() => running.delete(orchestrator));
          return orchestrator;
        },
      };
    },
    deliver: (deviceId, delivery) =>
      hub.service.invokeDeviceMethod(deviceId, 'otaOrchestrator', { methodName: 'applyUpdate', payload: delivery, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 20 }),
    feedbackOf(jobId) {
      const byId = new Map<string, FeedbackMessage>();
      for (const event of sink.ofType('DeviceTelemetry')) {
        const body = event.data.body as FeedbackMessage | undefined;
        if (body?.jobId === jobId && body.messageId) byId.set(body.messageId, body);
      }
      return [...byId.values()].sort((a, b) => a.sequence - b.sequence);
    },
    async stop() {
      await Promise.all([...running].map((p) => p.stop()));
      await server.close();
      await hub.stop();
      await sink.close();
    },
  };
}
