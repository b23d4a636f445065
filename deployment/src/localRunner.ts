import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import iothub from 'azure-iothub';
import { expandTemplate, finaliseManifest, modulesDir, repositoryRoot } from './manifest.ts';
import type { JsonObject } from './manifest.ts';
import { localiseValue, mountsOf, readCreateOptions } from './localVolumes.ts';
import { createDeploymentValidator, formatProblems } from './schemas.ts';

const { Registry } = iothub;

// Plays edgeAgent on one machine: applies a deployment manifest to the hub emulator (which creates the module
// identities and loads the edgeHub routes, as IoT Hub + edgeAgent would), then runs each of our modules as a
// process with the environment aziot-edged gives a module container, restarts it by its restartPolicy with
// backoff, and stops everything with SIGTERM, then SIGKILL after a grace period.

/** The parts of the emulator's hub.json the runner needs. */
export interface LocalHubInfo {
  hostName: string;
  serviceConnectionString: string;
  caFile: string;
  /** `unix://.../{deviceId}.sock` */
  workloadUri: string;
}

export type RestartPolicy = 'never' | 'on-failure' | 'on-unhealthy' | 'always';
export type ModuleState = 'running' | 'backoff' | 'exited' | 'stopped';

export interface ModuleCommand {
  command: string;
  args: string[];
}

export interface LocalEdgeOptions {
  hubInfo: LocalHubInfo;
  deviceId: string;
  /** A deployment manifest: generated (createOptions strings) or a template (placeholders, createOptions objects). */
  manifest: JsonObject;
  stateDir: string;
  /** Modules to run; default: every running module of the deployment that has modules/<id>/src/main.ts. */
  modules?: readonly string[];
  /** Per module, environment set on top of the deployment's (e.g. a free port in tests, a pty for the demo). */
  envOverrides?: Readonly<Record<string, Readonly<Record<string, string>>>>;
  /** IOTEDGE_PARENTHOSTNAME, as aziot-edged sets it on a child gateway. */
  parentHostName?: string;
  /** Create the edge device in the emulator when it does not exist yet (the factory setup normally does). */
  createDevice?: boolean;
  /** How a module is started; default `node --import tsx --conditions=source modules/<id>/src/main.ts`. */
  moduleCommand?: (moduleId: string) => ModuleCommand | undefined;
  /** Restart delays: initialMs doubling up to maxMs; a run longer than resetAfterMs starts the series again. */
  backoff?: { initialMs?: number; maxMs?: number; resetAfterMs?: number };
  /** Between SIGTERM and SIGKILL when stopping. */
  stopGraceMs?: number;
  /** Check the manifest against the IoT Edge deployment schema first (default true; needs ../shared/schemas). */
  validate?: boolean;
  /** Where module output lines (prefixed with the module id) and runner messages go; default stderr. */
  log?: (line: string) => void;
}

export interface ModuleExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  runMs: number;
}

export interface LocalModule {
  readonly moduleId: string;
  readonly restartPolicy: RestartPolicy;
  readonly environment: Readonly<Record<string, string>>;
  readonly state: ModuleState;
  readonly pid: number | undefined;
  readonly starts: number;
  readonly exits: readonly ModuleExit[];
  /** The last 64 KB of the module's stdout and stderr. */
  readonly output: string;
  readonly events: EventEmitter;
}

export interface LocalEdge {
  readonly deviceId: string;
  readonly modules: ReadonlyMap<string, LocalModule>;
  /** Modules of the deployment that are not run locally, with the reason. */
  readonly skipped: ReadonlyMap<string, string>;
  stop(): Promise<void>;
}

interface AgentModule {
  status?: string;
  restartPolicy?: RestartPolicy;
  startupOrder?: number;
  env?: Record<string, { value: string | number | boolean }>;
  settings: Record<string, unknown>;
}

const outputLimit = 64 * 1024;

/** Template or manifest -> manifest: placeholders and createOptions objects would be refused by the hub. */
function concreteManifest(manifest: JsonObject): JsonObject {
  const isTemplate = '$schema-template' in manifest || JSON.stringify(manifest).includes('${MODULES.');
  if (!isTemplate) return manifest;
  return finaliseManifest(expandTemplate(manifest, { platform: 'amd64', registry: 'localhost' }));
}

function defaultCommand(moduleId: string): ModuleCommand | undefined {
  const main = path.join(modulesDir, moduleId, 'src', 'main.ts');
  if (!existsSync(main)) return undefined;
  return { command: process.execPath, args: ['--import', 'tsx', '--conditions=source', main] };
}

class ModuleProcess implements LocalModule {
  readonly events = new EventEmitter();
  state: ModuleState = 'stopped';
  starts = 0;
  readonly exits: ModuleExit[] = [];
  output = '';
  #child: ChildProcess | undefined;
  #timer: NodeJS.Timeout | undefined;
  #attempt = 0;
  #stopping = false;
  readonly moduleId: string;
  readonly restartPolicy: RestartPolicy;
  readonly environment: Readonly<Record<string, string>>;
  readonly #command: ModuleCommand;
  readonly #backoff: Required<NonNullable<LocalEdgeOptions['backoff']>>;
  readonly #log: (line: string) => void;

  constructor(init: { moduleId: string; restartPolicy: RestartPolicy; environment: Record<string, string>; command: ModuleCommand; backoff: Required<NonNullable<LocalEdgeOptions['backoff']>>; log: (line: string) => void }) {
    this.moduleId = init.moduleId;
    this.restartPolicy = init.restartPolicy;
    this.environment = init.environment;
    this.#command = init.command;
    this.#backoff = init.backoff;
    this.#log = init.log;
  }

  get pid(): number | undefined {
    return this.state === 'running' ? this.#child?.pid : undefined;
  }

  start(): void {
    if (this.#stopping) return;
    const startedAt = Date.now();
    // The module's working directory is the repository, so that `--import tsx` resolves as under `npm run`.
    const child = spawn(this.#command.command, this.#command.args, { cwd: repositoryRoot, env: { ...this.environment }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.#child = child;
    this.starts += 1;
    this.state = 'running';
    const collect = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-outputLimit);
      for (const line of chunk.toString().split('\n')) if (line.trim()) this.#log(`[${this.moduleId}] ${line}`);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('error', (error) => this.#log(`[${this.moduleId}] could not start: ${error.message}`));
    child.once('exit', (code, signal) => this.#exited({ code, signal, runMs: Date.now() - startedAt }));
    this.events.emit('start', child.pid);
  }

  #exited(exit: ModuleExit): void {
    this.exits.push(exit);
    this.#child = undefined;
    this.events.emit('exit', exit);
    if (this.#stopping) {
      this.state = 'stopped';
      return;
    }
    // edgeAgent's rules: `always` restarts whatever the exit; on-failure and on-unhealthy restart a failed module
    // (non-zero code or killed by a signal); `never` leaves it down. Health checks are not run locally.
    const failed = exit.signal !== null || exit.code !== 0;
    const restart = this.restartPolicy === 'always' || (failed && (this.restartPolicy === 'on-failure' || this.restartPolicy === 'on-unhealthy'));
    this.#log(`[${this.moduleId}] exited with ${exit.signal ?? `code ${exit.code}`}${restart ? '' : `; restartPolicy ${this.restartPolicy}: not restarted`}`);
    if (!restart) {
      this.state = 'exited';
      return;
    }
    if (exit.runMs >= this.#backoff.resetAfterMs) this.#attempt = 0;
    const delay = Math.min(this.#backoff.initialMs * 2 ** this.#attempt, this.#backoff.maxMs);
    this.#attempt += 1;
    this.state = 'backoff';
    this.#timer = setTimeout(() => this.start(), delay);
  }

  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.state = 'stopped';
      return;
    }
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const killer = setTimeout(() => {
      this.#log(`[${this.moduleId}] did not stop within ${graceMs} ms: SIGKILL`);
      child.kill('SIGKILL');
    }, graceMs);
    await exited;
    clearTimeout(killer);
    this.state = 'stopped';
  }
}

/** The environment aziot-edged gives a module container, for the emulator's device. */
export function edgeEnvironment(hubInfo: LocalHubInfo, deviceId: string, moduleId: string, generationId: string, parentHostName?: string): Record<string, string> {
  return {
    IOTEDGE_WORKLOADURI: hubInfo.workloadUri.replace('{deviceId}', encodeURIComponent(deviceId)),
    IOTEDGE_DEVICEID: deviceId,
    IOTEDGE_MODULEID: moduleId,
    IOTEDGE_IOTHUBHOSTNAME: hubInfo.hostName,
    IOTEDGE_GATEWAYHOSTNAME: hubInfo.hostName,
    IOTEDGE_AUTHSCHEME: 'sasToken',
    IOTEDGE_MODULEGENERATIONID: generationId,
    IOTEDGE_APIVERSION: '2019-01-30',
    RuntimeLogLevel: 'info',
    ...(parentHostName ? { IOTEDGE_PARENTHOSTNAME: parentHostName } : {}),
  };
}

function explainTlsFailure(error: unknown, hubInfo: LocalHubInfo): Error {
  const message = (error as Error).message ?? String(error);
  if (/certificate|self.signed|UNABLE_TO_VERIFY/i.test(message)) {
    return new Error(`${message}: start this process with NODE_EXTRA_CA_CERTS=${hubInfo.caFile} (the service SDK has no CA option)`);
  }
  return error as Error;
}

export async function startLocalEdge(options: LocalEdgeOptions): Promise<LocalEdge> {
  const log = options.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const manifest = concreteManifest(options.manifest);
  // The runner refuses what IoT Hub's tooling would refuse, so that a manifest that works locally also deploys.
  if (options.validate !== false) {
    const problems = createDeploymentValidator().check('deployment', manifest);
    if (problems.length > 0) throw new Error(`the deployment manifest is not valid:\n${formatProblems(problems)}`);
  }
  const content = manifest.modulesContent as JsonObject;
  const agent = (content.$edgeAgent as JsonObject)['properties.desired'] as { modules?: Record<string, AgentModule> };
  const deployed = agent.modules ?? {};
  const registry = Registry.fromConnectionString(options.hubInfo.serviceConnectionString);
  try {
    if (options.createDevice) {
      const exists = await registry.get(options.deviceId).then(() => true, () => false);
      if (!exists) await registry.create({ deviceId: options.deviceId, capabilities: { iotEdge: true } });
    }
    await registry.applyConfigurationContentOnDevice(options.deviceId, { modulesContent: content });
  } catch (error) {
    throw explainTlsFailure(error, options.hubInfo);
  }

  const moduleIds = Object.keys(deployed);
  const skipped = new Map<string, string>();
  const selected = Object.entries(deployed)
    .filter(([id, module]) => {
      if (options.modules && !options.modules.includes(id)) return false;
      if (module.status === 'stopped') {
        skipped.set(id, 'status is stopped');
        return false;
      }
      return true;
    })
    .sort(([, a], [, b]) => (a.startupOrder ?? 4294967295) - (b.startupOrder ?? 4294967295));
  const backoff = { initialMs: 1_000, maxMs: 30_000, resetAfterMs: 60_000, ...options.backoff };
  const modules = new Map<string, ModuleProcess>();
  const graceMs = options.stopGraceMs ?? 10_000;
  try {
    for (const [moduleId, module] of selected) {
      const command = (options.moduleCommand ?? defaultCommand)(moduleId) ?? defaultCommand(moduleId);
      if (!command) {
        skipped.set(moduleId, `no modules/${moduleId}/src/main.ts to run locally`);
        log(`[runner] ${moduleId}: ${skipped.get(moduleId)}`);
        continue;
      }
      const mounts = mountsOf(readCreateOptions(module.settings), options.stateDir);
      for (const mount of mounts) mkdirSync(mount.file ? path.dirname(mount.local) : mount.local, { recursive: true });
      const deploymentEnv = Object.fromEntries(
        Object.entries(module.env ?? {}).map(([name, { value }]) => [name, localiseValue(String(value), mounts, moduleIds, '127.0.0.1')]),
      );
      const generationId = (await registry.getModule(options.deviceId, moduleId)).responseBody.generationId ?? '';
      const environment = {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        ...deploymentEnv,
        ...edgeEnvironment(options.hubInfo, options.deviceId, moduleId, generationId, options.parentHostName),
        ...options.envOverrides?.[moduleId],
      };
      const process_ = new ModuleProcess({ moduleId, restartPolicy: module.restartPolicy ?? 'always', environment, command, backoff, log });
      modules.set(moduleId, process_);
      process_.start();
    }
  } catch (error) {
    // A half-started gateway is worse than none: whatever already runs is stopped before the error surfaces.
    await Promise.all([...modules.values()].map((module) => module.stop(graceMs)));
    throw error;
  }
  for (const id of moduleIds) if (!modules.has(id) && !skipped.has(id)) skipped.set(id, 'not selected');

  let stopped: Promise<void> | undefined;
  return {
    deviceId: options.deviceId,
    modules,
    skipped,
    stop() {
      // All at once, so stopping takes at most one grace period however many modules hang.
      stopped ??= Promise.all([...modules.values()].map((module) => module.stop(graceMs))).then(() => undefined);
      return stopped;
    },
  };
}
