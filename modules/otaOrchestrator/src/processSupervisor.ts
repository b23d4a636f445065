import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

// Keeps the applications that updates installed running: one child per app name, restarted with backoff when it
// exits. What should run is persisted (a small JSON file written before each change), so after the orchestrator
// restarts, start() brings every app back. Each app runs in its own process group, so stopping it also stops
// whatever it started, and carries EDGE_OTA_APP=<name> so a copy left over from a crashed orchestrator can be
// recognised and stopped instead of running twice.

export interface AppSpec {
  name: string;
  version: string;
  /** argv; command[0] is an absolute path or a program on PATH. */
  command: string[];
  cwd: string;
  env: Record<string, string>;
}

export interface AppExit {
  code: number | null;
  signal: string | null;
}

export interface AppStatus {
  spec: AppSpec;
  pid: number | undefined;
  /** How often the app ended since it was last (re)configured with run(). */
  exits: number;
  lastExit: AppExit | undefined;
}

export interface ProcessSupervisorOptions {
  /** Where the desired apps are kept (JSON). */
  stateFile: string;
  /** stdout/stderr of each app go to <logDir>/<name>.log; unset discards them. */
  logDir?: string;
  /** First restart delay, doubled per quick exit up to maxBackoffMs. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** An app that ran this long before exiting restarts after initialBackoffMs again. */
  stableAfterMs?: number;
  /** SIGTERM, then SIGKILL after this long. */
  stopTimeoutMs?: number;
  log?: (line: string) => void;
}

interface Supervised {
  spec: AppSpec;
  child: ChildProcess | undefined;
  exits: number;
  quickExits: number;
  lastExit: AppExit | undefined;
  restartTimer: NodeJS.Timeout | undefined;
  /** Set while the supervisor itself is stopping the child: that exit is not a crash. */
  stopping: boolean;
  exitWaiters: Array<(exit: AppExit) => void>;
}

interface PersistedState {
  apps: Record<string, AppSpec & { pid?: number }>;
}

export class ProcessSupervisor {
  readonly #options: Required<Omit<ProcessSupervisorOptions, 'logDir'>> & { logDir: string | undefined };
  readonly #apps = new Map<string, Supervised>();
  #stopped = false;
  /** Serialises changes to the state file. */
  #writing: Promise<void> = Promise.resolve();

  constructor(options: ProcessSupervisorOptions) {
    this.#options = {
      stateFile: options.stateFile,
      logDir: options.logDir,
      initialBackoffMs: options.initialBackoffMs ?? 500,
      maxBackoffMs: options.maxBackoffMs ?? 30_000,
      stableAfterMs: options.stableAfterMs ?? 10_000,
      stopTimeoutMs: options.stopTimeoutMs ?? 5_000,
      log: options.log ?? (() => undefined),
    };
  }

  /** Starts every app the state file says should run (orchestrator start-up). */
  async start(): Promise<void> {
    const state = await this.#read();
    for (const app of Object.values(state.apps)) {
      if (app.pid !== undefined) await stopLeftover(app.pid, app.name, this.#options.stopTimeoutMs);
      const { pid: _pid, ...spec } = app;
      this.#launch(this.#entry(spec));
    }
    await this.#persist();
  }

  /** Makes `spec` the app that runs under its name: persisted first, then the old child stopped, the new started. */
  async run(spec: AppSpec): Promise<void> {
    if (this.#stopped) throw new Error('the process supervisor is stopped');
    const existing = this.#apps.get(spec.name);
    if (existing && sameSpec(existing.spec, spec) && existing.child) return;
    const entry = this.#entry(spec);
    await this.#persist();
    if (existing) await this.#halt(existing);
    this.#apps.set(spec.name, entry);
    this.#launch(entry);
    await this.#persist();
  }

  /** Stops an app and forgets it. */
  async remove(name: string): Promise<void> {
    const existing = this.#apps.get(name);
    this.#apps.delete(name);
    await this.#persist();
    if (existing) await this.#halt(existing);
  }

  /** The persisted spec of an app, whether or not it runs in this process. */
  spec(name: string): AppSpec | undefined {
    return this.#apps.get(name)?.spec;
  }

  status(name: string): AppStatus | undefined {
    const app = this.#apps.get(name);
    return app && { spec: app.spec, pid: app.child?.pid, exits: app.exits, lastExit: app.lastExit };
  }

  /** Resolves with the next exit of the app, or undefined if it keeps running for `ms` (or is not supervised). */
  nextExit(name: string, ms: number, signal?: AbortSignal): Promise<AppExit | undefined> {
    const app = this.#apps.get(name);
    if (!app) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const finish = (exit: AppExit | undefined): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        app.exitWaiters = app.exitWaiters.filter((w) => w !== waiter);
        resolve(exit);
      };
      const waiter = (exit: AppExit): void => finish(exit);
      const onAbort = (): void => finish(undefined);
      const timer = setTimeout(() => finish(undefined), ms);
      signal?.addEventListener('abort', onAbort);
      app.exitWaiters.push(waiter);
    });
  }

  /** Orchestrator shutdown: stops every child; the persisted state stays, so start() brings them back. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([...this.#apps.values()].map((app) => this.#halt(app)));
    await this.#writing;
  }

  #entry(spec: AppSpec): Supervised {
    const entry: Supervised = { spec, child: undefined, exits: 0, quickExits: 0, lastExit: undefined, restartTimer: undefined, stopping: false, exitWaiters: [] };
    this.#apps.set(spec.name, entry);
    return entry;
  }

  #launch(app: Supervised): void {
    if (this.#stopped || app.stopping) return;
    const { spec } = app;
    let output: number | 'ignore' = 'ignore';
    if (this.#options.logDir) {
      mkdirSync(this.#options.logDir, { recursive: true });
      output = openSync(path.join(this.#options.logDir, `${spec.name}.log`), 'a');
    }
    const startedAt = Date.now();
    const [file, ...args] = spec.command;
    let child: ChildProcess;
    try {
      child = spawn(file ?? '', args, {
        cwd: spec.cwd,
        env: { ...process.env, ...spec.env, EDGE_OTA_APP: spec.name },
        stdio: ['ignore', output, output],
        // Its own process group: stopping the app stops what it started too.
        detached: true,
      });
    } finally {
      // The child holds its own copy of the log descriptor.
      if (typeof output === 'number') closeSync(output);
    }
    app.child = child;
    this.#options.log(`${spec.name} ${spec.version}: started pid ${child.pid ?? '?'}`);
    const onExit = (code: number | null, signal: string | null): void => {
      if (app.child !== child) return;
      app.child = undefined;
      const exit = { code, signal };
      app.lastExit = exit;
      for (const waiter of app.exitWaiters.splice(0)) waiter(exit);
      if (app.stopping || this.#stopped) return;
      app.exits += 1;
      app.quickExits = Date.now() - startedAt >= this.#options.stableAfterMs ? 0 : app.quickExits + 1;
      const delay = Math.min(this.#options.maxBackoffMs, this.#options.initialBackoffMs * 2 ** Math.max(0, app.quickExits - 1));
      this.#options.log(`${spec.name} ${spec.version}: exited (${signal ?? `code ${code ?? '?'}`}); restart in ${delay} ms`);
      app.restartTimer = setTimeout(() => {
        app.restartTimer = undefined;
        if (this.#apps.get(spec.name) === app) {
          this.#launch(app);
          void this.#persist();
        }
      }, delay);
    };
    child.on('exit', onExit);
    child.on('error', (error) => {
      this.#options.log(`${spec.name}: cannot start ${file ?? ''}: ${error.message}`);
      // A program that could not be spawned (ENOENT) never exits; treat it as an exit so the backoff applies.
      if (child.pid === undefined) onExit(null, null);
    });
  }

  async #halt(app: Supervised): Promise<void> {
    app.stopping = true;
    clearTimeout(app.restartTimer);
    const child = app.child;
    if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    signalGroup(child.pid, 'SIGTERM');
    const timer = setTimeout(() => child.pid && signalGroup(child.pid, 'SIGKILL'), this.#options.stopTimeoutMs);
    await exited;
    clearTimeout(timer);
    // The group may outlive its leader (a shell's background jobs).
    signalGroup(child.pid, 'SIGKILL');
  }

  #persist(): Promise<void> {
    const state: PersistedState = { apps: {} };
    for (const [name, app] of this.#apps) state.apps[name] = { ...app.spec, ...(app.child?.pid ? { pid: app.child.pid } : {}) };
    const text = `${JSON.stringify(state, null, 2)}\n`;
    const file = this.#options.stateFile;
    this.#writing = this.#writing.then(async () => {
      mkdirSync(path.dirname(file), { recursive: true });
      await writeFile(`${file}.tmp`, text);
      await rename(`${file}.tmp`, file);
    });
    return this.#writing;
  }

  async #read(): Promise<PersistedState> {
    try {
      return JSON.parse(await readFile(this.#options.stateFile, 'utf8')) as PersistedState;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { apps: {} };
      throw error;
    }
  }
}

function sameSpec(a: AppSpec, b: AppSpec): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * An app started by an orchestrator that crashed keeps running in its own process group. Stop it, but only when
 * the pid still belongs to that app (its environment names it): pids are reused.
 */
async function stopLeftover(pid: number, name: string, timeoutMs: number): Promise<void> {
  let environ: string;
  try {
    environ = await readFile(`/proc/${pid}/environ`, 'utf8');
  } catch {
    return;
  }
  if (!environ.split('\0').includes(`EDGE_OTA_APP=${name}`)) return;
  signalGroup(pid, 'SIGTERM');
  for (let waited = 0; waited < timeoutMs; waited += 50) {
    if (!isAlive(pid)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  signalGroup(pid, 'SIGKILL');
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
