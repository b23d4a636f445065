import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import iothub from 'azure-iothub';
import Database from 'better-sqlite3';
import { TrustStore, readRootPublicKeyFileSync, readSigningKeyFileSync } from '@edge-ota/common';
import type { Dispatcher } from '../../cloud/dispatcher/src/app.ts';
import { createDispatcher } from '../../cloud/dispatcher/src/app.ts';
import { writeTestKeys } from '../../cloud/dispatcher/src/keyFiles.ts';
import type { HubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { HubFaults, startHubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { startHostDevice, startQemuDeviceOnSocket, stopAll as stopFirmware } from '../../modules/serialTranslator/test/support/hostFirmware.ts';
import type { DemoGateway } from './demoGateway.ts';
import { startDemoGateway } from './demoGateway.ts';
import type { FirmwareKeys, PublishedUpdate } from './demoUpdates.ts';
import { APP_NAME, GATEWAY_PROPERTIES, MCU_PROPERTIES, firmwareBundle, firmwareKeys, gatewayApplication, mcuFirmware } from './demoUpdates.ts';
import type { CacheStats, HistoryEntry } from './liveFeed.ts';
import { LiveFeed, getJson, mib } from './liveFeed.ts';

const { Registry } = iothub;

// The whole flow on one machine, as a user would run it: the IoT Hub emulator, the dispatcher, two nested gateways
// run by the local runner from our deployment manifests, and the firmware sample on a pty as the child gateway's
// MCU. Part 1: a device created through the API gets its software through both caches and the serial translator.
// Part 2: the child gateway is cut off, a newer firmware arrives on a USB stick, and the result reaches the cloud
// once the link is back. Every step is observed from outside (API, caches' /stats, twins, the gateway's journal);
// nothing here reaches into a component to make a result.

export const TOP = 'plant-top';
export const CHILD = 'line-1';
export const MCU = 'line-1-sensor-mcu';

export interface DemoOptions {
  stateDir: string;
  caDir: string;
  /** Part 2, the USB drop-in with the cloud cut off. */
  usb: boolean;
  /** The MCU: the firmware sample built for this machine, or built for a Cortex-M3 board and run under qemu-system-arm. */
  mcu: 'host' | 'qemu';
  /** Live lines (already formatted). */
  out: (line: string) => void;
  /** Module output lines. */
  moduleLog: (line: string) => void;
  stepTimeoutMs?: number;
  /** Ctrl-C: the demo stops waiting, and stops everything it started. */
  signal?: AbortSignal;
}

export interface DemoCheck {
  name: string;
  ok: boolean;
  details: string;
}

export interface DemoSummary {
  ok: boolean;
  durationSeconds: number;
  devices: Array<{
    deviceId: string;
    role: 'gateway' | 'mcu';
    parentId: string | null;
    assignedUpdateId: string | null;
    installedVersion: string | null;
    jobs: Array<{ jobId: string; updateId: string; state: string; origin: string | null; steps: string[] }>;
  }>;
  /** What each layer fetched from the one above it. */
  caches: Record<string, { upstream: string; upstreamBytes: number; upstreamRequests: number; servedBytes: number; servedFromStoreBytes: number; objects: number }>;
  /** Every artifact of the catalog with what the dispatcher's artifact store served of it (its /status/artifacts). */
  cloudStore: { artifacts: Array<{ updateId: string; file: string; sha256: string; bytes: number; requests: number; completed: number; bytesSent: number }> };
  gatewayApps: Record<string, { running: boolean; pid: number | null; heartbeatAgeSeconds: number | null }>;
  mcu: { deviceId: string; reportedFirmware: Record<string, string> };
  usb: { bundle: string; bytes: number; jobIds: string[]; finishedOffline: boolean; offlineOutboxMessages: number; reportedAfterReconnect: boolean } | null;
  checks: DemoCheck[];
}

interface DeviceView {
  deviceId: string;
  parentId: string | null;
  isGateway: boolean;
  assignedUpdateId: string | null;
  installedVersion: string | null;
  currentJob: { jobId: string; state: string } | null;
}

interface JobView {
  jobId: string;
  updateId: string;
  state: string;
  origin?: string;
}

async function api(baseUrl: string, method: string, pathName: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${baseUrl}${pathName}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await response.text();
  return { status: response.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

let interrupted: AbortSignal | undefined;

async function until<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (interrupted?.aborted) throw new Error(`interrupted while waiting for ${what}`);
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const started = Date.now();
  interrupted = options.signal;
  const stepTimeoutMs = options.stepTimeoutMs ?? 180_000;
  const say = (source: string, subject: string, text: string): void => {
    options.out(`${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s  ${source.padEnd(10)} ${subject.padEnd(18)} ${text}`);
  };
  let feed: LiveFeed | undefined;
  const phase = async (title: string): Promise<void> => {
    if (options.signal?.aborted) throw new Error('interrupted');
    await feed?.flush();
    options.out(`\n== ${title}`);
  };
  const cleanups: Array<() => Promise<void> | void> = [];
  try {
    await phase('cloud: IoT Hub emulator and dispatcher');
    const hub: HubProcess = await startHubProcess({ caDir: options.caDir, stateDir: path.join(options.stateDir, 'hub') });
    cleanups.push(() => hub.stop());
    say('hub', hub.info.hostName, 'IoT Hub emulator ready (REST 443, MQTT 8883, Event Hubs endpoint)');
    const registry = Registry.fromConnectionString(hub.info.serviceConnectionString);

    const dispatcherDir = path.join(options.stateDir, 'dispatcher');
    mkdirSync(dispatcherDir, { recursive: true });
    const keyFiles = writeTestKeys(dispatcherDir);
    const signingKey = readSigningKeyFileSync(keyFiles.signingKeyFile);
    const dispatcher: Dispatcher = await createDispatcher({
      hubConnectionString: hub.info.serviceConnectionString,
      eventHubsConnectionString: hub.info.eventHubsConnectionString,
      dataDir: dispatcherDir,
      signingKey,
      trustStore: new TrustStore({ rootKeys: [readRootPublicKeyFileSync(keyFiles.rootPublicFile)], aduServiceRoots: false }),
      host: '127.0.0.1',
      dispatch: { initialBackoffMs: 500, maxBackoffMs: 4000 },
    });
    cleanups.push(() => dispatcher.close());
    say('dispatcher', '-', `device-manager API on ${dispatcher.url}, reading lifecycle events and feedback from the hub's Event Hubs endpoint`);
    say('dispatcher', '-', `signing with test-only keys; devices trust ${path.relative(process.cwd(), keyFiles.rootPublicFile)}`);

    await phase('publish: a gateway application and MCU firmware, imported into the catalog');
    const mcuKeys: FirmwareKeys = firmwareKeys();
    const app: PublishedUpdate = gatewayApplication('1.1.0', 1024 * 1024);
    const firmware: PublishedUpdate = mcuFirmware('1.1.0', mcuKeys, 48 * 1024);
    for (const update of [app, firmware]) {
      const imported = await api(dispatcher.url, 'POST', '/updates', update.request);
      if (imported.status !== 201) throw new Error(`importing ${update.updateId}: HTTP ${imported.status} ${JSON.stringify(imported.body)}`);
      const sizes = Object.entries(update.request.files).map(([name, b64]) => `${name} ${mib(Buffer.from(b64, 'base64').length)}`);
      say('dispatcher', '-', `imported ${update.updateId}: ${sizes.join(', ')}`);
    }

    await phase(`gateways: ${TOP} (top layer) and ${CHILD} (nested below it), created through the API`);
    for (const body of [
      { deviceId: TOP, isGateway: true, updateId: app.updateId },
      { deviceId: CHILD, isGateway: true, parentId: TOP, updateId: app.updateId },
    ]) {
      const created = await api(dispatcher.url, 'POST', '/devices', body);
      if (created.status !== 201) throw new Error(`creating ${body.deviceId}: HTTP ${created.status} ${JSON.stringify(created.body)}`);
      say('api', body.deviceId, `created (edge gateway${body.parentId ? `, parent ${body.parentId}` : ''}), assigned ${body.updateId}`);
    }

    cleanups.push(() => stopFirmware());
    const mcuDevice = options.mcu === 'qemu' ? await startQemuDeviceOnSocket() : await startHostDevice({ factoryVersion: '1.0.0' });
    say('mcu', MCU, `${options.mcu === 'qemu' ? 'firmware sample for mps2-an385 (Cortex-M3) under qemu-system-arm' : 'firmware sample (host build)'}, MCUboot slots, on serial ${mcuDevice.pty.hostPath}`);

    const top: DemoGateway = await startDemoGateway({
      hubInfo: hub.info, deviceId: TOP, stateDir: path.join(options.stateDir, 'edge', TOP), trustRootsFile: keyFiles.rootPublicFile,
      deviceProperties: { ...GATEWAY_PROPERTIES }, log: (line) => options.moduleLog(`${TOP} ${line}`),
    });
    cleanups.push(() => top.stop());
    const child: DemoGateway = await startDemoGateway({
      hubInfo: hub.info, deviceId: CHILD, stateDir: path.join(options.stateDir, 'edge', CHILD), trustRootsFile: keyFiles.rootPublicFile,
      deviceProperties: { ...GATEWAY_PROPERTIES }, parent: { hostName: '127.0.0.1', cachePort: top.cachePort },
      mcus: [{ deviceId: MCU, port: mcuDevice.pty.hostPath, publicKeyPem: mcuKeys.publicKeyPem }], mcuProperties: { ...MCU_PROPERTIES }, log: (line) => options.moduleLog(`${CHILD} ${line}`),
    });
    cleanups.push(() => child.stop());
    for (const gateway of [top, child]) {
      say('edge', gateway.deviceId, `local runner started ${[...gateway.edge.modules.keys()].join(', ')} (cache on ${gateway.cacheUrl})`);
    }

    feed = new LiveFeed({
      dispatcherUrl: dispatcher.url,
      caches: [
        { gatewayId: TOP, url: top.cacheUrl, upstream: 'the cloud artifact store' },
        { gatewayId: CHILD, url: child.cacheUrl, upstream: `${TOP}'s cache` },
      ],
      print: say,
    });
    feed.watch(TOP);
    feed.watch(CHILD);
    feed.start();
    const liveFeed = feed;
    cleanups.push(() => liveFeed.stop());

    const finished = (deviceId: string, version?: string): Promise<DeviceView> =>
      until(`${deviceId}'s job to finish`, stepTimeoutMs, async () => {
        const device = (await api(dispatcher.url, 'GET', `/devices/${deviceId}`)).body as unknown as DeviceView;
        const state = device.currentJob?.state;
        if (state !== 'succeeded' && state !== 'failed' && state !== 'cancelled') return undefined;
        return version === undefined || device.installedVersion === version || state !== 'succeeded' ? device : undefined;
      });
    for (const gateway of [TOP, CHILD]) {
      const view = await finished(gateway);
      await liveFeed.flush();
      say('demo', gateway, `job ${view.currentJob?.state ?? '?'}: installed ${view.installedVersion ?? '-'}`);
    }

    await phase(`MCU: ${MCU} on ${CHILD}'s serial port, created through the API`);
    feed.watch(MCU);
    const created = await api(dispatcher.url, 'POST', '/devices', { deviceId: MCU, parentId: CHILD, updateId: firmware.updateId });
    if (created.status !== 201) throw new Error(`creating ${MCU}: HTTP ${created.status} ${JSON.stringify(created.body)}`);
    say('api', MCU, `created (leaf device of ${CHILD}), assigned ${firmware.updateId}`);
    // The translator gives the MCU its own identity: the operator hands it the new device's key, as the factory would.
    const mcuIdentity = await registry.get(MCU);
    const mcuKey = mcuIdentity.responseBody.authentication?.symmetricKey?.primaryKey;
    if (!mcuKey || !child.mcuKeysFile) throw new Error(`${MCU} has no symmetric key in IoT Hub`);
    writeFileSync(`${child.mcuKeysFile}.tmp`, JSON.stringify({ [MCU]: mcuKey }), { mode: 0o600 });
    renameSync(`${child.mcuKeysFile}.tmp`, child.mcuKeysFile);
    await registry.updateModuleTwin(CHILD, 'serialTranslator', { properties: { desired: { keysUpdatedAt: new Date().toISOString() } } }, '*');
    const firmwareWatch = watchFirmwareTwin(registry, MCU, say);
    cleanups.push(() => firmwareWatch.stop());
    const mcuView = await finished(MCU, '1.1.0');
    await liveFeed.flush();
    say('demo', MCU, `job ${mcuView.currentJob?.state ?? '?'}: installed ${mcuView.installedVersion ?? '-'}`);
    await until(`${MCU}'s own twin to report 1.1.0`, 60_000, () => (firmwareWatch.latest.currentFwVersion === '1.1.0' ? true : undefined));

    let usb: DemoSummary['usb'] = null;
    if (options.usb) {
      await phase(`offline: ${CHILD} cut off from the cloud, firmware 1.2.0 arrives on a USB stick`);
      const faults = new HubFaults(hub.info, readFileSync(hub.info.caFile, 'utf8'));
      await faults.setUpstream(CHILD, false);
      say('hub', CHILD, 'upstream cut: the child gateway has no route to the cloud');
      const bundle = await firmwareBundle('1.2.0', mcuKeys, 48 * 1024, signingKey, path.join(options.stateDir, 'usb-stick'));
      // A copy lands under a temporary name and is renamed when complete, as a file manager does on a stick.
      mkdirSync(child.usbDir, { recursive: true });
      const target = path.join(child.usbDir, path.basename(bundle.file));
      copyFileSync(bundle.file, `${target}.part`);
      renameSync(`${target}.part`, target);
      say('usb', CHILD, `${path.basename(bundle.file)} (${mib(bundle.bytes)}, signed) plugged in`);
      const journal = path.join(child.orchestratorStateDir, 'jobs.sqlite');
      const readJournal = journalReader(journal, say);
      const offline = await until('the offline job to finish on the gateway', stepTimeoutMs, readJournal);
      const cloudView = (await api(dispatcher.url, 'GET', `/devices/${MCU}`)).body as unknown as DeviceView;
      say('demo', MCU, `installed offline; the cloud still shows ${cloudView.installedVersion ?? '-'} (the feedback waits in ${CHILD}'s edgeHub, store and forward)`);
      await faults.setUpstream(CHILD, true);
      say('hub', CHILD, 'upstream restored');
      const reported = await finished(MCU, '1.2.0').then(() => true, (error: unknown) => {
        say('demo', MCU, (error as Error).message);
        return false;
      });
      usb = {
        bundle: path.basename(bundle.file), bytes: bundle.bytes, jobIds: offline.jobIds, finishedOffline: offline.succeeded,
        offlineOutboxMessages: offline.outbox, reportedAfterReconnect: reported,
      };
      await until(`${MCU}'s own twin to report 1.2.0`, 60_000, () => (firmwareWatch.latest.currentFwVersion === '1.2.0' ? true : undefined)).catch(() => undefined);
    }

    await liveFeed.stop();
    const summary = await summarise({ dispatcherUrl: dispatcher.url, top, child, app, firmware, firmwareTwin: firmwareWatch.latest, usb });
    summary.durationSeconds = Math.round((Date.now() - started) / 100) / 10;
    return summary;
  } finally {
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        options.out(`cleanup: ${(error as Error).message}`);
      }
    }
  }
}

/** Follows the MCU's own device twin (reported by serialTranslator under the MCU's identity) and prints changes. */
function watchFirmwareTwin(registry: iothub.Registry, deviceId: string, say: (source: string, subject: string, text: string) => void): { latest: Record<string, string>; stop(): void } {
  const state = { latest: {} as Record<string, string>, stopped: false, stop: (): void => { state.stopped = true; } };
  let last = '';
  const tick = async (): Promise<void> => {
    while (!state.stopped) {
      try {
        const twin = (await registry.getTwin(deviceId)).responseBody as unknown as { properties: { reported: { firmware?: Record<string, string> } } };
        const firmware = twin.properties.reported.firmware ?? {};
        const text = ['currentFwVersion', 'pendingFwVersion', 'fwUpdateStatus', 'fwUpdateSubstatus'].filter((k) => firmware[k] !== undefined && firmware[k] !== '').map((k) => `${k}=${firmware[k] ?? ''}`).join(' ');
        if (text && text !== last) say('mcu twin', deviceId, text);
        last = text;
        state.latest = firmware;
      } catch {
        // The device twin is read again on the next tick.
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  };
  void tick();
  return state;
}

/** Reads the child gateway's own journal (read-only), as someone standing at the gateway would, while it is offline. */
function journalReader(journal: string, say: (source: string, subject: string, text: string) => void): () => { jobIds: string[]; succeeded: boolean; outbox: number } | undefined {
  let lastJournal = '';
  return () => {
    if (!existsSync(journal)) return undefined;
    const db = new Database(journal, { readonly: true, fileMustExist: true });
    try {
      const jobs = db.prepare(`SELECT job_id, target_id, state FROM jobs WHERE job_id LIKE 'usb-%'`).all() as Array<{ job_id: string; target_id: string; state: string }>;
      const outbox = (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n;
      const key = JSON.stringify(jobs);
      if (jobs.length > 0 && key !== lastJournal) say('gateway', CHILD, `journal: ${jobs.map((j) => `${j.target_id} ${j.state}`).join(', ')}; outbox ${outbox}`);
      lastJournal = key;
      const terminal = jobs.length > 0 && jobs.every((j) => ['succeeded', 'failed', 'rolledBack', 'cancelled'].includes(j.state));
      return terminal ? { jobIds: jobs.map((j) => j.job_id), succeeded: jobs.every((j) => j.state === 'succeeded'), outbox } : undefined;
    } finally {
      db.close();
    }
  };
}

function appStatus(gateway: DemoGateway): DemoSummary['gatewayApps'][string] {
  const dir = path.join(gateway.orchestratorStateDir, 'apps', APP_NAME, 'current');
  const pidFile = path.join(dir, 'app.pid');
  const heartbeatFile = path.join(dir, 'heartbeat');
  if (!existsSync(pidFile) || !existsSync(heartbeatFile)) return { running: false, pid: null, heartbeatAgeSeconds: null };
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  let alive = false;
  try {
    process.kill(pid, 0);
    alive = true;
  } catch {
    alive = false;
  }
  const beat = Number(readFileSync(heartbeatFile, 'utf8').trim());
  if (!Number.isFinite(beat) || beat <= 0) return { running: false, pid, heartbeatAgeSeconds: null };
  const age = Date.now() / 1000 - beat;
  return { running: alive && age < 10, pid, heartbeatAgeSeconds: Math.round(age * 10) / 10 };
}

async function summarise(input: {
  dispatcherUrl: string; top: DemoGateway; child: DemoGateway; app: PublishedUpdate; firmware: PublishedUpdate;
  firmwareTwin: Record<string, string>; usb: DemoSummary['usb'];
}): Promise<DemoSummary> {
  const devices: DemoSummary['devices'] = [];
  for (const deviceId of [TOP, CHILD, MCU]) {
    const view = (await api(input.dispatcherUrl, 'GET', `/devices/${deviceId}`)).body as unknown as DeviceView;
    const { jobs } = (await api(input.dispatcherUrl, 'GET', `/devices/${deviceId}/jobs`)).body as unknown as { jobs: JobView[] };
    const { history } = (await api(input.dispatcherUrl, 'GET', `/devices/${deviceId}/history?limit=5000`)).body as unknown as { history: HistoryEntry[] };
    devices.push({
      deviceId,
      role: view.isGateway ? 'gateway' : 'mcu',
      parentId: view.parentId,
      assignedUpdateId: view.assignedUpdateId,
      installedVersion: view.installedVersion,
      jobs: jobs.map((job) => ({
        jobId: job.jobId, updateId: job.updateId, state: job.state, origin: job.origin ?? null,
        steps: history.filter((h) => h.kind === 'feedback' && h.jobId === job.jobId).map((h) => `${h.step ?? ''}:${h.status}`),
      })),
    });
  }
  const caches: DemoSummary['caches'] = {};
  for (const [gateway, upstream] of [[input.top, 'cloud artifact store'], [input.child, `${TOP} contentCache`]] as const) {
    const stats = await getJson<CacheStats>(`${gateway.cacheUrl}/stats`);
    caches[gateway.deviceId] = {
      upstream, upstreamBytes: stats.counters.upstreamBytes, upstreamRequests: stats.counters.upstreamRequests,
      servedBytes: stats.counters.egressBytes, servedFromStoreBytes: stats.counters.hitBytes, objects: stats.objects,
    };
  }
  const served = (await getJson<{ artifacts: Array<{ sha256: string; requests: number; completed: number; bytesSent: number }> }>(`${input.dispatcherUrl}/status/artifacts`)).artifacts;
  const artifacts = [input.app, input.firmware].flatMap((update) => Object.entries(update.sha256).map(([file, sha256]) => {
    const count = served.find((a) => a.sha256 === sha256);
    return {
      updateId: update.updateId, file, sha256, bytes: Buffer.from(update.request.files[file] ?? '', 'base64').length,
      requests: count?.requests ?? 0, completed: count?.completed ?? 0, bytesSent: count?.bytesSent ?? 0,
    };
  }));
  const summary: DemoSummary = {
    ok: false,
    durationSeconds: 0,
    devices,
    caches,
    cloudStore: { artifacts },
    gatewayApps: { [TOP]: appStatus(input.top), [CHILD]: appStatus(input.child) },
    mcu: { deviceId: MCU, reportedFirmware: input.firmwareTwin },
    usb: input.usb,
    checks: [],
  };
  summary.checks = demoChecks(summary);
  summary.ok = summary.checks.every((check) => check.ok);
  return summary;
}

const requiredSteps = ['download:succeeded', 'validate:succeeded', 'install:succeeded', 'job:succeeded'];

export function demoChecks(summary: DemoSummary): DemoCheck[] {
  const checks: DemoCheck[] = [];
  const check = (name: string, ok: boolean, details: string): void => void checks.push({ name, ok, details });
  for (const device of summary.devices) {
    const first = device.jobs.find((job) => job.origin !== 'offline') ?? device.jobs[0];
    check(`${device.deviceId}: cloud job succeeded`, first?.state === 'succeeded', first ? `${first.updateId}: ${first.state}` : 'no job');
    const missing = requiredSteps.filter((step) => !first?.steps.includes(step));
    check(`${device.deviceId}: every step's feedback reached the dispatcher`, first !== undefined && missing.length === 0, missing.length ? `missing ${missing.join(', ')}` : (first?.steps.join(' ') ?? ''));
  }
  for (const [gateway, app] of Object.entries(summary.gatewayApps)) {
    check(`${gateway}: gateway application running`, app.running, app.pid ? `pid ${app.pid}, heartbeat ${app.heartbeatAgeSeconds ?? '-'} s old` : 'not started');
  }
  const mcu = summary.devices.find((d) => d.deviceId === MCU);
  const expected = summary.usb ? '1.2.0' : '1.1.0';
  check(`${MCU}: on ${expected} in the dispatcher`, mcu?.installedVersion === expected, `installed ${mcu?.installedVersion ?? '-'}`);
  const firmware = summary.mcu.reportedFirmware;
  check(`${MCU}: its own twin reports ${expected}, confirmed`, firmware.currentFwVersion === expected && firmware.fwUpdateStatus === 'current',
    `currentFwVersion ${firmware.currentFwVersion ?? '-'}, fwUpdateStatus ${firmware.fwUpdateStatus ?? '-'}`);
  for (const artifact of summary.cloudStore.artifacts) {
    check(`${artifact.file}: served by the cloud store once`, artifact.requests === 1 && artifact.completed === 1 && artifact.bytesSent === artifact.bytes,
      `${artifact.requests} requests, ${artifact.completed} complete, ${artifact.bytesSent} of ${artifact.bytes} bytes sent`);
  }
  const artifactBytes = summary.cloudStore.artifacts.reduce((sum, a) => sum + a.bytes, 0);
  const childCache = summary.caches[CHILD];
  check(`${CHILD}'s cache filled from ${TOP}'s only`, childCache !== undefined && childCache.upstreamBytes === artifactBytes,
    `${childCache?.upstreamBytes ?? 0} bytes from ${TOP}'s cache for ${artifactBytes} bytes of artifacts`);
  if (summary.usb) {
    check('USB: installed while offline', summary.usb.finishedOffline, `jobs ${summary.usb.jobIds.join(', ')}`);
    check('USB: reported to the cloud after reconnecting', summary.usb.reportedAfterReconnect, `orchestrator outbox when the offline install ended: ${summary.usb.offlineOutboxMessages}`);
  }
  return checks;
}
