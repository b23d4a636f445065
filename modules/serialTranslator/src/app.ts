import { createHash } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import {
  FLASH_FIRMWARE_METHOD,
  GET_FLASH_STATUS_METHOD,
  MCU_FLASH_SCHEMA,
  OtaError,
  isFinalFlashStatus,
  parseMcuFlashRequest,
  resultCodes,
} from '@edge-ota/common';
import type { McuFlashProgress, McuFlashRequest, ResultCodeName } from '@edge-ota/common';
import type { ConfigurationProblem, McuConfiguration, TranslatorSettings } from './configuration.ts';
import { isRecord, parseMcus, readMcuKeys } from './configuration.ts';
import { FlashFlow } from './flashFlow.ts';
import type { FlashResult } from './flashFlow.ts';
import { FlashJobStore } from './flashJobStore.ts';
import type { FlashJob, FlashJobSource } from './flashJobStore.ts';
import { ProgressThrottle, failure, finalProgress, flowProgress, twinStatusOf } from './flashProgressReport.ts';
import { downloadImage, sha256AsBase64 } from './imageDownload.ts';
import type { MethodReply, TranslatorConnection } from './iotEdgeConnection.ts';
import { readImageState } from './imageGroup.ts';
import { McuIdentity } from './mcuIdentity.ts';
import type { FirmwareReport } from './mcuIdentity.ts';
import { McuLocks } from './mcuLocks.ts';
import { McuPortLink } from './mcuPort.ts';
import { SmpClient } from './smpClient.ts';

// The serialTranslator module: MCUs configured from the module twin, each with its port link and its own IoT Hub
// identity; flash jobs from the orchestrator's `flashFirmware` method or from an MCU twin's desired `firmware`,
// each persisted before it is accepted and run under a per-MCU lock (one flash per MCU, MCUs in parallel).
// main.ts wires this to the real edgeHub; tests can hand it any TranslatorConnection.

export interface SerialTranslatorOptions {
  connection: TranslatorConnection;
  configuration: TranslatorSettings;
  configurationProblems?: ConfigurationProblem[];
  log?: (line: string) => void;
}

export interface SerialTranslator {
  /** Resolves once the first desired configuration has been applied and unfinished jobs were picked up. */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

interface McuRuntime {
  config: McuConfiguration;
  port: McuPortLink;
  identity: McuIdentity | undefined;
  /** The version the MCU last reported running (image 0, active slot). */
  runningVersion: string | undefined;
}

const LINK_WAIT_MS = 10_000;

export function startSerialTranslator(options: SerialTranslatorOptions): SerialTranslator {
  const { connection, configuration: settings } = options;
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  mkdirSync(path.join(settings.stateDir, 'images'), { recursive: true });
  const store = new FlashJobStore(path.join(settings.stateDir, 'serialTranslator.db'));
  const locks = new McuLocks();
  const mcus = new Map<string, McuRuntime>();
  /** The newest progress of running jobs, per chunk; the store holds what was last sent. */
  const liveProgress = new Map<string, McuFlashProgress>();
  const running = new Set<Promise<void>>();
  let stopping = false;
  let configurationProblems: ConfigurationProblem[] = [];
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  let firstConfiguration = true;

  let reportTimer: NodeJS.Timeout | undefined;
  /** Reports the MCUs' state in the module twin; changes within 100 ms go out as one patch. */
  const reportModule = (): void => {
    if (reportTimer || stopping) return;
    reportTimer = setTimeout(() => {
      reportTimer = undefined;
      reportModuleNow();
    }, 100);
  };
  const reportModuleNow = (): void => {
    const reported: Record<string, unknown> = {};
    for (const [mcuId, mcu] of mcus) {
      reported[mcuId] = {
        port: mcu.config.portText,
        baudRate: mcu.config.baudRate,
        link: mcu.port.state,
        identity: mcu.identity ? (mcu.identity.connected ? 'connected' : 'connecting') : 'noKey',
        runningVersion: mcu.runningVersion ?? null,
      };
    }
    connection
      .reportProperties({ mcus: reported, configurationProblems: [...(options.configurationProblems ?? []), ...configurationProblems] })
      .catch((error: Error) => log(`module twin report failed: ${error.message}`));
  };
  let removedMcus: string[] = [];

  /** Applies the desired `mcus`: new MCUs open, removed ones close, a changed port or key re-opens (between flashes). */
  const applyConfiguration = (desired: Record<string, unknown>): void => {
    const { keys, problems: keyProblems } = readMcuKeys(settings);
    const parsed = parseMcus(desired.mcus, settings, keys);
    configurationProblems = [...keyProblems, ...parsed.problems];
    for (const problem of configurationProblems) log(`configuration: ${problem.setting}: ${problem.message}`);
    for (const [mcuId, mcu] of mcus) {
      if (!parsed.mcus.has(mcuId)) {
        mcus.delete(mcuId);
        removedMcus.push(mcuId);
        void locks.run(mcuId, async () => {
          await mcu.port.close();
          await mcu.identity?.close();
        });
      }
    }
    for (const [mcuId, config] of parsed.mcus) {
      const current = mcus.get(mcuId);
      if (!current) {
        const runtime: McuRuntime = { config, port: portLink(config), identity: undefined, runningVersion: undefined };
        mcus.set(mcuId, runtime);
        runtime.identity = openIdentity(config);
        continue;
      }
      const portChanged = current.config.portText !== config.portText || current.config.baudRate !== config.baudRate;
      const identityChanged = current.config.deviceConnectionString !== config.deviceConnectionString;
      current.config = config;
      if (portChanged || identityChanged) {
        // Wait for a flash in progress: pulling its link away would cost a retry for nothing.
        void locks.run(mcuId, async () => {
          if (portChanged) {
            log(`MCU ${mcuId}: port is now ${config.portText} at ${config.baudRate} baud`);
            await current.port.close();
            current.port = portLink(config);
          }
          if (identityChanged) {
            await current.identity?.close();
            current.identity = openIdentity(config);
          }
        });
      }
    }
    reportModule();
    if (removedMcus.length > 0) {
      connection.reportProperties({ mcus: Object.fromEntries(removedMcus.map((id) => [id, null])) }).catch(() => undefined);
      removedMcus = [];
    }
    if (firstConfiguration) {
      firstConfiguration = false;
      resumeUnfinished();
      markReady();
    }
  };

  const portLink = (config: McuConfiguration): McuPortLink =>
    new McuPortLink(config.port, config.baudRate, (state) => {
      log(`MCU ${config.mcuId}: link ${state} (${config.portText})`);
      reportModule();
      // Whenever the MCU (re)appears outside a flash it may run something else now (swapped, reflashed by hand).
      if (state === 'up' && !locks.isBusy(config.mcuId)) void refreshRunningVersion(config.mcuId);
    });

  const openIdentity = (config: McuConfiguration): McuIdentity | undefined => {
    if (!config.deviceConnectionString) return undefined;
    const latest = store.latestFor(config.mcuId);
    const initial: FirmwareReport = latest && isFinalFlashStatus(latest.progress.status)
      ? { fwUpdateStatus: twinStatusOf(latest.progress.phase, latest.progress.status), lastFwUpdateStartTime: latest.startedAt, ...(latest.endedAt ? { lastFwUpdateEndTime: latest.endedAt } : {}) }
      : { fwUpdateStatus: 'current' };
    return new McuIdentity({
      mcuId: config.mcuId,
      connectionString: config.deviceConnectionString,
      edge: connection,
      log,
      initial,
      onDesired: (desired) => desiredFirmware(config.mcuId, desired),
      onConnected: reportModule,
    });
  };

  /** Asks the MCU what it runs, for the twin's currentFwVersion; between flashes only. */
  const refreshRunningVersion = (mcuId: string): Promise<void> =>
    locks.run(mcuId, async () => {
      const mcu = mcus.get(mcuId);
      if (!mcu || stopping) return;
      const link = await mcu.port.ready(LINK_WAIT_MS);
      if (!link) return;
      const client = new SmpClient(link, mcu.config.smp);
      try {
        const active = (await readImageState(client)).find((s) => s.active && s.image === 0);
        if (active) setRunningVersion(mcuId, active.version);
      } catch (error) {
        log(`MCU ${mcuId}: could not read its image state: ${(error as Error).message}`);
      } finally {
        client.close();
      }
    });

  const setRunningVersion = (mcuId: string, version: string): void => {
    const mcu = mcus.get(mcuId);
    if (!mcu) return;
    mcu.runningVersion = version;
    mcu.identity?.update({ currentFwVersion: version });
    reportModule();
  };

  /** Sends a progress (if the throttle lets it) after storing it; the final one is always stored and sent. */
  const publish = (progress: McuFlashProgress, throttle: ProgressThrottle | undefined): void => {
    liveProgress.set(progress.jobId, progress);
    if (throttle && !throttle.shouldSend(progress)) return;
    store.saveProgress(progress);
    connection.sendProgress(progress).catch((error: Error) => log(`mcuProgress ${progress.jobId} not sent: ${error.message}`));
  };

  const twinUpdate = (mcuId: string, progress: McuFlashProgress, extra: FirmwareReport = {}): void => {
    const identity = mcus.get(mcuId)?.identity;
    if (!identity) return;
    const percent = progress.totalBytes ? Math.floor(((progress.bytesSent ?? 0) * 100) / progress.totalBytes) : undefined;
    const substatus = progress.status === 'inProgress' ? `${progress.phase}${percent !== undefined && progress.phase === 'uploading' ? ` ${percent}%` : ''}` : (progress.resultDetails ?? progress.status);
    identity.update({ fwUpdateStatus: twinStatusOf(progress.phase, progress.status), fwUpdateSubstatus: substatus, ...extra });
  };

  /** Runs one job to its end (or until the module stops: then it stays unfinished and is resumed on start). */
  const execute = (job: FlashJob): void => {
    const task = locks
      .run(job.mcuId, () => runJob(job))
      .catch((error: unknown) => log(`job ${job.jobId}: ${(error as Error).stack ?? String(error)}`));
    running.add(task);
    void task.finally(() => running.delete(task));
  };

  const runJob = async (job: FlashJob): Promise<void> => {
    const { jobId, mcuId, request } = job;
    const throttle = new ProgressThrottle(settings.progressPercentStep, settings.progressIntervalMs);
    const base = { schema: MCU_FLASH_SCHEMA, jobId, mcuId } as const;
    const finish = (progress: McuFlashProgress): void => {
      if (stopping) return;
      publish(progress, undefined);
      liveProgress.delete(jobId);
      twinUpdate(mcuId, progress, {
        lastFwUpdateEndTime: new Date().toISOString(),
        ...(progress.status === 'succeeded' ? { pendingFwVersion: '' } : {}),
      });
      if (progress.runningVersion) setRunningVersion(mcuId, progress.runningVersion);
      log(`job ${jobId} on ${mcuId}: ${progress.status}${progress.resultDetails ? ` (${progress.resultDetails})` : ''}`);
    };
    const mcu = mcus.get(mcuId);
    if (!mcu) {
      finish(failure({ ...base, phase: 'done' }, 'failed', 0, resultCodes.MCU_UNKNOWN.extendedResultCode, `MCU ${mcuId} is not configured on this gateway`));
      return;
    }
    const total = request.image.sizeInBytes;
    publish({ ...base, phase: 'queued', status: 'inProgress', bytesSent: 0, totalBytes: total }, throttle);
    twinUpdate(mcuId, { ...base, phase: 'queued', status: 'inProgress' }, { pendingFwVersion: request.image.version, lastFwUpdateStartTime: job.startedAt });

    const imageFile = path.join(settings.stateDir, 'images', `${createHash('sha256').update(jobId).digest('hex').slice(0, 32)}.bin`);
    let image: Uint8Array;
    try {
      image = await downloadImage({
        url: request.image.url,
        sha256: request.image.sha256,
        // 0 on the twin path, which carries no size: then only the contract's maximum bounds the download.
        ...(request.image.sizeInBytes > 0 ? { sizeInBytes: request.image.sizeInBytes } : {}),
        file: imageFile,
      });
    } catch (error) {
      const code: ResultCodeName = error instanceof OtaError ? error.code : 'DOWNLOAD_CONNECTION_FAILED';
      finish(failure({ ...base, phase: 'done', totalBytes: total }, 'failed', 0, resultCodes[code].extendedResultCode, `download: ${(error as Error).message}`, mcu.runningVersion));
      return;
    }

    const link = await mcu.port.ready(LINK_WAIT_MS);
    if (stopping) return;
    if (!link) {
      finish(failure({ ...base, phase: 'done', totalBytes: total }, 'failed', 0, resultCodes.MCU_UNREACHABLE.extendedResultCode, `port ${mcu.config.portText} did not open`, mcu.runningVersion));
      return;
    }
    const config = mcu.config;
    const flow = new FlashFlow({
      mcuId,
      link,
      image,
      publicKey: config.publicKey,
      expectedVersion: request.image.version,
      ...(config.slotSize !== undefined ? { slotSize: config.slotSize } : {}),
      ...(config.smp ? { client: config.smp } : {}),
      ...(config.rebootTimeoutMs !== undefined ? { rebootTimeoutMs: config.rebootTimeoutMs } : {}),
      ...(config.healthCheck?.smp || request.healthCheck ? { healthCheck: appHealthCheck(config, request) } : {}),
    });
    let bytesSent = 0;
    flow.on('progress', (p) => {
      bytesSent = Math.max(bytesSent, p.phase === 'upload' ? p.bytesSent : 0);
      const progress = flowProgress(jobId, mcuId, p);
      const before = liveProgress.get(jobId)?.phase;
      publish(progress, throttle);
      if (before !== progress.phase) twinUpdate(mcuId, progress);
    });
    const result: FlashResult = await flow.run();
    if (stopping) return;
    rmSync(imageFile, { force: true });
    finish(finalProgress(jobId, mcuId, result, image.length, bytesSent, mcu.runningVersion));
  };

  /** After a restart: unfinished jobs run again (FlashFlow resumes an upload and checks a trial image). */
  const resumeUnfinished = (): void => {
    for (const job of store.unfinished()) {
      log(`job ${job.jobId} on ${job.mcuId} was interrupted at ${job.progress.phase}: resuming`);
      execute(job);
    }
  };

  /** Stores and starts a job; the caller has checked that it is new and its MCU free. */
  const accept = (request: McuFlashRequest, source: FlashJobSource): void => {
    const job = {
      jobId: request.jobId,
      mcuId: request.mcuId,
      source,
      request,
      progress: { schema: MCU_FLASH_SCHEMA, jobId: request.jobId, mcuId: request.mcuId, phase: 'queued', status: 'inProgress' } as const,
      startedAt: new Date().toISOString(),
    };
    store.insert(job);
    execute({ ...job, endedAt: undefined });
  };

  const lastProgress = (jobId: string): McuFlashProgress | undefined => liveProgress.get(jobId) ?? store.get(jobId)?.progress;

  const refusal = (code: ResultCodeName, message: string): MethodReply => ({
    status: 400,
    payload: { accepted: false, code, resultCode: resultCodes[code].resultCode, extendedResultCode: resultCodes[code].extendedResultCode, message },
  });

  connection.onMethod(FLASH_FIRMWARE_METHOD, (payload) => {
    let request: McuFlashRequest;
    try {
      request = parseMcuFlashRequest(payload);
    } catch (error) {
      return Promise.resolve(refusal('MCU_FLASH_REQUEST_INVALID', (error as Error).message));
    }
    // Everything below is synchronous (SQLite included), so two calls cannot both take the same MCU.
    const known = lastProgress(request.jobId);
    if (known) return Promise.resolve({ status: 200, payload: { accepted: true, known: true, progress: known } });
    if (stopping) return Promise.resolve({ status: 503, payload: { accepted: false, message: 'the module is stopping' } });
    if (!mcus.has(request.mcuId)) return Promise.resolve(refusal('MCU_UNKNOWN', `MCU ${request.mcuId} is not configured on this gateway`));
    const busy = store.openJobFor(request.mcuId);
    if (busy) return Promise.resolve(refusal('MCU_BUSY', `MCU ${request.mcuId} is being flashed by job ${busy.jobId}`));
    accept(request, 'method');
    log(`job ${request.jobId}: flash ${request.mcuId} to ${request.image.version} accepted`);
    return Promise.resolve({ status: 202, payload: { accepted: true, jobId: request.jobId } });
  });

  connection.onMethod(GET_FLASH_STATUS_METHOD, (payload) => {
    const jobId = isRecord(payload) && typeof payload.jobId === 'string' ? payload.jobId : undefined;
    if (!jobId) return Promise.resolve({ status: 400, payload: { code: 'MCU_FLASH_REQUEST_INVALID', message: 'payload must be {"jobId": "..."}' } });
    const progress = lastProgress(jobId);
    return Promise.resolve(progress ? { status: 200, payload: progress } : { status: 404, payload: { code: 'JOB_NOT_FOUND', message: `no flash job ${jobId}` } });
  });

  /** The firmware-update tutorial path: desired `firmware` on the MCU's own twin starts a job. */
  const desiredFirmware = (mcuId: string, desired: Record<string, unknown>): void => {
    const firmware = desired.firmware;
    if (!isRecord(firmware) || stopping) return;
    const { fwVersion, fwPackageURI, fwPackageCheckValue } = firmware;
    const identity = mcus.get(mcuId)?.identity;
    const sha256 = typeof fwPackageCheckValue === 'string' ? sha256AsBase64(fwPackageCheckValue) : undefined;
    if (typeof fwVersion !== 'string' || typeof fwPackageURI !== 'string' || !sha256) {
      identity?.update({ fwUpdateStatus: 'error', fwUpdateSubstatus: 'desired firmware needs fwVersion, fwPackageURI and fwPackageCheckValue (sha256, hex or base64)' });
      return;
    }
    const hex = Buffer.from(sha256, 'base64').toString('hex');
    // The desired document is replayed on every connect and after unrelated patches: the firmware it names is new
    // only if the MCU's last job was not for it. Going back to an earlier firmware later is new again.
    const latest = store.latestFor(mcuId);
    if (latest?.source === 'twin' && latest.request.image.sha256 === sha256 && latest.request.image.version === fwVersion) return;
    const desiredVersion = typeof desired.$version === 'number' ? desired.$version : Date.now();
    const jobId = `twin:${mcuId}:${fwVersion}:${hex.slice(0, 16)}:${desiredVersion}`;
    if (store.get(jobId)) return;
    const url = settings.contentCacheUrl
      ? `${settings.contentCacheUrl.replace(/\/$/, '')}/sha256/${hex}?origin=${encodeURIComponent(fwPackageURI)}`
      : fwPackageURI;
    const sizeInBytes = typeof firmware.fwPackageSize === 'number' ? firmware.fwPackageSize : 0;
    const request: McuFlashRequest = { schema: MCU_FLASH_SCHEMA, jobId, mcuId, image: { url, sha256, sizeInBytes, version: fwVersion } };
    log(`job ${jobId}: ${mcuId} twin asks for firmware ${fwVersion}`);
    accept(request, 'twin');
  };

  connection.onDesired((desired) => {
    try {
      applyConfiguration(desired);
    } catch (error) {
      log(`configuration not applied: ${(error as Error).stack ?? String(error)}`);
    }
  });

  return {
    ready,
    async stop() {
      stopping = true;
      clearTimeout(reportTimer);
      const closing = [...mcus.values()].map(async (mcu) => {
        await mcu.port.close();
        await mcu.identity?.close();
      });
      await Promise.allSettled(closing);
      await Promise.allSettled([...running]);
      store.close();
    },
  };
}

/** The request's timeout and the MCU's configured SMP check, as FlashFlow's app-specific health check. */
function appHealthCheck(config: McuConfiguration, request: McuFlashRequest): (client: SmpClient) => Promise<boolean> {
  return async (client) => {
    const check = config.healthCheck?.smp;
    if (!check) return true;
    const timeoutMs = (request.healthCheck?.timeoutSeconds ?? config.healthCheck?.timeoutSeconds ?? 30) * 1000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)));
    try {
      await Promise.race([client.request({ op: check.op, group: check.group, command: check.command, body: check.body }), timeout]);
      return true;
    } finally {
      clearTimeout(timer);
    }
  };
}
