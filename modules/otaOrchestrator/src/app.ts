import { APPLY_UPDATE_METHOD, DEVICE_UPDATE_TWIN_PROPERTY, MCU_PROGRESS_INPUT } from '@edge-ota/common';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { ArtifactDownloader } from './artifactDownloader.ts';
import type { ArtifactSource } from './artifactDownloader.ts';
import type { ConfigurationProblem, OrchestratorConfiguration } from './configuration.ts';
import { applyDesiredConfiguration } from './configuration.ts';
import { FaultInjection } from './faultInjection.ts';
import { FeedbackOutbox } from './feedbackOutbox.ts';
import { FileHandler } from './handlers/fileHandler.ts';
import { McuHandler } from './handlers/mcuHandler.ts';
import { ScriptHandler } from './handlers/scriptHandler.ts';
import { HandlerRegistry } from './handlers/updateHandler.ts';
import type { UpdateHandler } from './handlers/updateHandler.ts';
import type { EdgeConnection } from './iotEdgeConnection.ts';
import { JobStore } from './jobStore.ts';
import { ReportedState } from './reportedState.ts';
import { loadTrustStore, persistRootKeyPackage } from './trustConfiguration.ts';
import { UsbDropIn } from './usbDropIn.ts';
import type { Rebooter } from './updateEngine.ts';
import { UpdateEngine } from './updateEngine.ts';

// Builds the orchestrator from its parts; `main.ts` only reads the environment, connects and handles signals.

export interface OrchestratorOptions {
  connection: EdgeConnection;
  configuration: OrchestratorConfiguration;
  configurationProblems?: ConfigurationProblem[];
  rebooter: Rebooter;
  /** Extra handlers (A/B image, apt, process start) configured by main. */
  handlers?: UpdateHandler[];
  faults?: FaultInjection;
  log?: (line: string) => void;
}

export interface Orchestrator {
  readonly engine: UpdateEngine;
  readonly store: JobStore;
  stop(): Promise<void>;
}

/**
 * Where the module fetches an artifact: the gateway's content cache (which fills from its parent), then the origin.
 * Only an http(s) origin is passed to the cache to fill from; a file: origin (a USB bundle's file) is imported into
 * the cache by the drop-in, so the cache is asked for the hash alone, and the file stays the fallback.
 */
export function artifactSources(configuration: Pick<OrchestratorConfiguration, 'contentCacheUrl' | 'contentCacheToken'>, originUrl: string, sha256Hex: string): ArtifactSource[] {
  const direct: ArtifactSource = { url: originUrl };
  if (!configuration.contentCacheUrl) return [direct];
  const fillable = /^https?:/i.test(originUrl);
  const cached: ArtifactSource = {
    url: `${configuration.contentCacheUrl}/sha256/${sha256Hex}${fillable ? `?origin=${encodeURIComponent(originUrl)}` : ''}`,
    ...(configuration.contentCacheToken ? { headers: { authorization: `Bearer ${configuration.contentCacheToken}` } } : {}),
  };
  return [cached, direct];
}

export function startOrchestrator(options: OrchestratorOptions): Orchestrator {
  const log = options.log ?? (() => undefined);
  const { connection } = options;
  let configuration = options.configuration;
  let problems = options.configurationProblems ?? [];
  mkdirSync(configuration.stateDir, { recursive: true });
  const store = new JobStore(path.join(configuration.stateDir, 'jobs.sqlite'));
  const trustStore = loadTrustStore(configuration);
  const mcu = new McuHandler({
    invoke: (moduleId, methodName, payload, timeoutSeconds) => connection.invokeModuleMethod(connection.deviceId, moduleId, methodName, payload, timeoutSeconds),
  });
  const handlers = new HandlerRegistry([new FileHandler(configuration.fileRoots), new ScriptHandler(), mcu, ...(options.handlers ?? [])]);
  const reported = new ReportedState({
    store,
    report: (patch) => connection.reportProperties(patch),
    gatewayId: connection.deviceId,
    deviceProperties: configuration.deviceProperties,
    log,
  });
  const outbox = new FeedbackOutbox(store, (message) => connection.sendFeedback(message), { log });
  const engine = new UpdateEngine({
    store,
    trustStore,
    handlers,
    downloader: new ArtifactDownloader(),
    dataDir: path.join(configuration.stateDir, 'data'),
    gatewayId: connection.deviceId,
    targetProperties: (targetId) => {
      if (targetId === connection.deviceId) return { properties: configuration.deviceProperties };
      return configuration.targets[targetId];
    },
    artifactSources: (originUrl, hex) => artifactSources(configuration, originUrl, hex),
    rebooter: options.rebooter,
    faults: options.faults ?? FaultInjection.fromEnvironment(),
    allowManifestsWithoutLifetime: configuration.allowManifestsWithoutLifetime,
    onFeedback: () => outbox.kick(),
    onJobChanged: (job) => reported.jobChanged(job),
    log,
  });

  connection.onMethod(APPLY_UPDATE_METHOD, (payload) => {
    const reply = engine.submit(payload, 'method');
    return Promise.resolve({ status: reply.accepted ? 200 : 400, payload: reply });
  });
  connection.onMethod('cancelUpdate', (payload) => {
    const jobId = (payload as { jobId?: unknown } | null)?.jobId;
    if (typeof jobId !== 'string') return Promise.resolve({ status: 400, payload: { error: 'jobId (string) is required' } });
    const reply = engine.cancel(jobId);
    return Promise.resolve({ status: reply.accepted ? 200 : 404, payload: reply });
  });
  connection.onMethod('getJob', (payload) => {
    const jobId = (payload as { jobId?: unknown } | null)?.jobId;
    const job = typeof jobId === 'string' ? store.getJob(jobId) : undefined;
    if (!job) return Promise.resolve({ status: 404, payload: { error: 'no such job' } });
    return Promise.resolve({ status: 200, payload: { jobId: job.jobId, targetId: job.targetId, state: job.state, resultCode: job.resultCode, extendedResultCode: job.extendedResultCode, resultDetails: job.resultDetails, log: store.jobLog(job.jobId).slice(-50) } });
  });
  connection.onInput(MCU_PROGRESS_INPUT, (body) => mcu.progressReceived(body, log));
  connection.onDesired((desired) => {
    const applied = applyDesiredConfiguration(options.configuration, desired.edgeOta);
    configuration = applied.configuration;
    problems = [...(options.configurationProblems ?? []), ...applied.problems];
    reported.configurationChanged(configuration.deviceProperties, problems);
    // ADU's shape (one deployment at a time) and edge-ota's map of pending deliveries keyed by job id.
    const deliveries: unknown[] = [];
    const aduService = (desired[DEVICE_UPDATE_TWIN_PROPERTY] as { service?: unknown } | undefined)?.service;
    if (aduService && typeof aduService === 'object') deliveries.push(aduService);
    const pending = desired.edgeOtaDeliveries;
    if (pending && typeof pending === 'object') deliveries.push(...Object.values(pending as Record<string, unknown>).filter((d) => d && typeof d === 'object'));
    for (const delivery of deliveries) {
      const reply = engine.submit(delivery, 'twin');
      if (!reply.accepted) log(`twin delivery ${reply.jobId} rejected: ${reply.resultDetails ?? ''}`);
    }
  });

  const usb = configuration.usbDropInDir
    ? new UsbDropIn({
        dir: configuration.usbDropInDir,
        workDir: path.join(configuration.stateDir, 'usb'),
        trustStore,
        engine,
        targets: () => [
          { deviceId: connection.deviceId, properties: configuration.deviceProperties },
          ...Object.entries(configuration.targets).map(([deviceId, target]) => ({ deviceId, properties: target.properties })),
        ],
        contentCache: configuration.contentCacheUrl
          ? { url: configuration.contentCacheUrl, ...(configuration.contentCacheAdminToken ? { adminToken: configuration.contentCacheAdminToken } : {}) }
          : undefined,
        onRootKeyPackage: () => persistRootKeyPackage(configuration, trustStore),
        onResult: (result) => reported.usbResult(result),
        log,
      })
    : undefined;

  engine.start();
  usb?.start();
  outbox.kick();
  reported.configurationChanged(configuration.deviceProperties, problems);
  reported.reportAll();
  return {
    engine,
    store,
    async stop() {
      await usb?.stop();
      await engine.stop();
      await outbox.stop();
      await reported.stop();
      store.close();
    },
  };
}
