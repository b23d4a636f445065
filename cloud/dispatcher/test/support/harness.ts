import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import iothub from 'azure-iothub';
import type { HubInfo, HubProcess } from '@edge-ota/hub-emulator';
import { HubFaults, startHubProcess, watchProcess } from '@edge-ota/hub-emulator';
import { TrustStore, readRootPublicKeyFileSync, readSigningKeyFileSync } from '@edge-ota/common';
import type { RootPublicKeyFile, SigningKey } from '@edge-ota/common';
import { createDispatcher } from '../../src/app.ts';
import type { Dispatcher, DispatcherOptions } from '../../src/app.ts';
import { writeTestKeys } from '../../src/keyFiles.ts';

const { Registry } = iothub;

// What a dispatcher test needs around it: a real emulator process, edge gateways with an otaOrchestrator
// module identity, stand-in orchestrator processes, signing keys, an import manifest with files, and bounded
// waits. Everything started here is stopped by `stop()`.

const standInFile = fileURLToPath(new URL('../fixtures/standInOrchestrator.ts', import.meta.url));
const mainFile = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

export interface JsonLineProcess {
  readonly events: Array<Record<string, unknown>>;
  waitFor(predicate: (event: Record<string, unknown>) => boolean, what: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  send(command: Record<string, unknown>): void;
  stop(signal?: NodeJS.Signals): Promise<void>;
  readonly child: ChildProcess;
}

/** A process speaking JSON lines on stdout (a line that is not JSON becomes `{ type: 'line', line }`). */
function jsonLines(child: ChildProcess): JsonLineProcess {
  const watched = watchProcess<Record<string, unknown>>(child, {
    itemsFrom: 'stdout',
    parse: (line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return { type: 'line', line };
      }
    },
  });
  return {
    events: watched.items,
    child,
    waitFor: (predicate, what, timeoutMs = 20_000) => watched.waitFor(predicate, what, timeoutMs),
    send(command) {
      child.stdin?.write(`${JSON.stringify(command)}\n`);
    },
    stop: (signal = 'SIGTERM') => watched.stop(signal, 5_000),
  };
}

export interface TestKeys {
  signingKey: SigningKey;
  trustStore: TrustStore;
  root: RootPublicKeyFile;
  signingKeyFile: string;
  rootPublicFile: string;
}

export function makeKeys(dir: string): TestKeys {
  const files = writeTestKeys(dir);
  const root = readRootPublicKeyFileSync(files.rootPublicFile);
  return { ...files, signingKey: readSigningKeyFileSync(files.signingKeyFile), trustStore: new TrustStore({ rootKeys: [root], aduServiceRoots: false }), root };
}

export function makeUpdate(version: string, fileCount = 1, fileSize = 2048, name = 'Sensor'): { importManifest: Record<string, unknown>; files: Record<string, string> } {
  const payload = Array.from({ length: fileCount }, (_, i) => ({ filename: `payload-${i}.bin`, data: randomBytes(fileSize) }));
  return {
    importManifest: {
      updateId: { provider: 'Contoso', name, version },
      compatibility: [{ manufacturer: 'Contoso', model: name }],
      instructions: { steps: [{ handler: 'microsoft/script:1', files: payload.map((f) => f.filename), handlerProperties: { installedCriteria: version } }] },
      files: payload.map((f) => ({ filename: f.filename, sizeInBytes: f.data.length, hashes: { sha256: createHash('sha256').update(f.data).digest('base64') } })),
      manifestVersion: '5.0',
      createdDateTime: '2026-01-02T03:04:05Z',
    },
    files: Object.fromEntries(payload.map((f) => [f.filename, f.data.toString('base64')])),
  };
}

export interface Harness {
  readonly hub: HubProcess;
  readonly info: HubInfo;
  readonly registry: InstanceType<typeof Registry>;
  readonly faults: HubFaults;
  readonly dir: string;
  readonly keys: TestKeys;
  /** Creates an edge gateway in IoT Hub with an otaOrchestrator module (as a deployment would). */
  createGateway(gatewayId: string, parentId?: string): Promise<void>;
  startOrchestrator(gatewayId: string, env?: Record<string, string>): Promise<JsonLineProcess>;
  startDispatcherProcess(dataDir: string, port: number): Promise<JsonLineProcess>;
  stop(): Promise<void>;
}

/** A dispatcher in this process on the harness's hub: Event Hubs ingestion, the harness's keys, quick retries. */
export function startDispatcher(harness: Harness, extra: Partial<DispatcherOptions> = {}): Promise<Dispatcher> {
  return createDispatcher({
    hubConnectionString: harness.info.serviceConnectionString,
    eventHubsConnectionString: harness.info.eventHubsConnectionString,
    dataDir: path.join(harness.dir, 'dispatcher'),
    signingKey: harness.keys.signingKey,
    trustStore: harness.keys.trustStore,
    dispatch: { initialBackoffMs: 200, maxBackoffMs: 1000 },
    ...extra,
  });
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function startHarness(options: { eventGridWebhooks?: string[] } = {}): Promise<Harness> {
  const caDir = process.env.EDGE_OTA_TEST_CA_DIR;
  if (!caDir) throw new Error('EDGE_OTA_TEST_CA_DIR is not set: run the tests through vitest (test/setup/globalSetup.ts)');
  const dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-test-'));
  const hub = await startHubProcess({ caDir, ...(options.eventGridWebhooks ? { eventGridWebhooks: options.eventGridWebhooks } : {}) });
  const registry = Registry.fromConnectionString(hub.info.serviceConnectionString);
  const faults = new HubFaults(hub.info, readFileSync(hub.info.caFile, 'utf8'));
  const keys = makeKeys(dir);
  const processes: JsonLineProcess[] = [];
  return {
    hub,
    info: hub.info,
    registry,
    faults,
    dir,
    keys,
    async createGateway(gatewayId, parentId) {
      const body: Record<string, unknown> = { deviceId: gatewayId, capabilities: { iotEdge: true } };
      if (parentId) body.parentScopes = [((await registry.get(parentId)).responseBody as { deviceScope?: string }).deviceScope];
      await registry.create(body as never);
      await registry.applyConfigurationContentOnDevice(gatewayId, {
        modulesContent: {
          $edgeAgent: { 'properties.desired': { schemaVersion: '1.1', runtime: { type: 'docker', settings: { minDockerVersion: 'v1.25' } },
            systemModules: {
              edgeAgent: { type: 'docker', settings: { image: 'mcr.microsoft.com/azureiotedge-agent:1.5', createOptions: '{}' } },
              edgeHub: { type: 'docker', status: 'running', restartPolicy: 'always', settings: { image: 'mcr.microsoft.com/azureiotedge-hub:1.5', createOptions: '{}' } },
            },
            modules: {
            otaOrchestrator: { version: '1.0', type: 'docker', status: 'running', restartPolicy: 'always', settings: { image: 'edge-ota/orchestrator:test', createOptions: '{}' } },
          } } },
          $edgeHub: { 'properties.desired': { schemaVersion: '1.2', routes: { upstream: { route: 'FROM /messages/* INTO $upstream', priority: 0, timeToLiveSecs: 7200 } }, storeAndForwardConfiguration: { timeToLiveSecs: 7200 } } },
        },
      });
    },
    async startOrchestrator(gatewayId, env = {}) {
      const generationId = (await registry.getModule(gatewayId, 'otaOrchestrator')).responseBody.generationId ?? '';
      const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', standInFile], {
        env: {
          PATH: process.env.PATH ?? '',
          IOTEDGE_WORKLOADURI: hub.info.workloadUri.replace('{deviceId}', encodeURIComponent(gatewayId)),
          IOTEDGE_DEVICEID: gatewayId, IOTEDGE_MODULEID: 'otaOrchestrator', IOTEDGE_IOTHUBHOSTNAME: hub.info.hostName,
          IOTEDGE_GATEWAYHOSTNAME: hub.info.hostName, IOTEDGE_AUTHSCHEME: 'sasToken', IOTEDGE_MODULEGENERATIONID: generationId, IOTEDGE_APIVERSION: '2019-01-30',
          STAND_IN_TRUST_ROOT: JSON.stringify(keys.root),
          ...env,
        },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const module = jsonLines(child);
      processes.push(module);
      await module.waitFor((e) => e.type === 'ready', `${gatewayId}/otaOrchestrator ready`, 30_000);
      return module;
    },
    async startDispatcherProcess(dataDir, port) {
      const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', mainFile, '--hub', path.join(hub.stateDir, 'hub.json'), '--data', dataDir,
        '--port', String(port), '--signing-key', keys.signingKeyFile, '--trust', keys.rootPublicFile], {
        env: { ...process.env, NODE_EXTRA_CA_CERTS: hub.info.caFile },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const dispatcher = jsonLines(child);
      processes.push(dispatcher);
      await dispatcher.waitFor((e) => e.type === 'line' && String(e.line).includes('dispatcher ready'), 'dispatcher ready', 30_000);
      return dispatcher;
    },
    async stop() {
      await Promise.allSettled(processes.map((p) => p.stop()));
      await hub.stop();
    },
  };
}

/** Polls `check` until it returns a value; never waits longer than `timeoutMs`. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export async function api(base: string, method: string, route: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(`${base}${route}`, {
    method,
    ...(body !== undefined ? { body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body), headers: { 'content-type': contentType } } : {}),
  });
  const text = await response.text();
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { raw: text };
  }
  return { status: response.status, body: parsed };
}
