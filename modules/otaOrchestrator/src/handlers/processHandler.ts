import { OtaError } from '@edge-ota/common';
import { chmod, copyFile, mkdir, readFile, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AppSpec, ProcessSupervisor } from '../processSupervisor.ts';
import { describeExit, runCommand } from './command.ts';
import type { PhaseOutcome, StepContext, UpdateHandler } from './updateHandler.ts';
import { done, failed } from './updateHandler.ts';

// `edge-ota/process:1`: installs the step's files as one version of an application and keeps it running under
// the ProcessSupervisor. handlerProperties:
// `{ "name": "my-app", "command": ["./app", "--flag"], "workingDirectory": "/data/my-app", "env": { "K": "v" },
//    "startTimeoutSeconds": 10, "healthCheck": { "command": ["./check"] } | { "url": "http://127.0.0.1:8080/healthz" } }`.
// Files go to <appsRoot>/<name>/<version>/ (staged, then renamed into place); apply points <name>/current at that
// version; run hands the app to the supervisor; healthCheck wants the process alive for startTimeoutSeconds and
// the optional check answering. Rollback starts the previous version again (or stops the app if there was none).
// command[0] starting with "./" is one of the update's files; anything else is an absolute path or on PATH.

export interface ProcessHandlerOptions {
  /** Where applications are installed: <appsRoot>/<name>/<version>/ and <appsRoot>/<name>/current. */
  appsRoot: string;
  supervisor: ProcessSupervisor;
  /** Directories a workingDirectory may lie under, besides the installed version's own directory. */
  allowedRoots?: ReadonlyArray<string>;
  defaultStartTimeoutSeconds?: number;
}

interface ProcessStep {
  name: string;
  command: string[];
  workingDirectory: string | undefined;
  env: Record<string, string>;
  startTimeoutSeconds: number;
  healthCheck: { command?: string[]; url?: string; timeoutSeconds: number } | undefined;
}

/** What ran before this step, written once before anything changes, so rollback can go back to it. */
interface Previous {
  current: string | null;
  spec: AppSpec | null;
}

const safeSegment = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

export class ProcessHandler implements UpdateHandler {
  readonly ids = ['edge-ota/process:1'];
  readonly needsLocalFiles = true;
  readonly #appsRoot: string;
  readonly #supervisor: ProcessSupervisor;
  readonly #allowedRoots: string[];
  readonly #defaultStartTimeout: number;

  constructor(options: ProcessHandlerOptions) {
    this.#appsRoot = path.resolve(options.appsRoot);
    this.#supervisor = options.supervisor;
    this.#allowedRoots = [this.#appsRoot, ...(options.allowedRoots ?? []).map((r) => path.resolve(r))];
    this.#defaultStartTimeout = options.defaultStartTimeoutSeconds ?? 10;
  }

  isInstalled(context: StepContext): Promise<boolean> {
    // Installed means: this version is the one the supervisor keeps running (no files needed to tell).
    const step = this.#step(context);
    const spec = this.#supervisor.spec(step.name);
    return Promise.resolve(spec?.version === version(context) && this.#supervisor.status(step.name)?.pid !== undefined);
  }

  async install(context: StepContext): Promise<PhaseOutcome> {
    try {
      const step = this.#step(context);
      const appDir = path.join(this.#appsRoot, step.name);
      await mkdir(appDir, { recursive: true });
      await this.#recordPrevious(context, step);
      const target = this.#versionDir(step, context);
      const staging = path.join(appDir, `.staging-${version(context)}-${process.pid}`);
      await rm(staging, { recursive: true, force: true });
      await mkdir(staging);
      const executable = step.command[0]?.startsWith('./') ? step.command[0].slice(2) : undefined;
      for (const file of context.files) {
        if (!file.path) throw new OtaError('INSTALL_FAILED', `file ${file.fileName} was not downloaded`);
        await copyFile(file.path, path.join(staging, file.fileName));
        await chmod(path.join(staging, file.fileName), file.fileName === executable ? 0o755 : 0o644);
      }
      if (executable && !context.files.some((f) => f.fileName === executable)) {
        throw new OtaError('INSTALL_FAILED', `command ${step.command[0] ?? ''} is not one of the step's files`);
      }
      // A directory cannot be renamed over a non-empty one: move an older copy of this version aside first.
      if (await exists(target)) {
        const aside = `${target}.replaced-${process.pid}`;
        await rm(aside, { recursive: true, force: true });
        await rename(target, aside);
        await rename(staging, target);
        await rm(aside, { recursive: true, force: true });
      } else {
        await rename(staging, target);
      }
      context.log(`installed ${step.name} ${version(context)} in ${target}`);
      return done();
    } catch (error) {
      return failed(asOtaError(error, 'INSTALL_FAILED'));
    }
  }

  async apply(context: StepContext): Promise<PhaseOutcome> {
    try {
      const step = this.#step(context);
      await switchCurrent(path.join(this.#appsRoot, step.name), version(context));
      context.log(`${step.name}/current -> ${version(context)}`);
      return done();
    } catch (error) {
      return failed(asOtaError(error, 'APPLY_FAILED'));
    }
  }

  async run(context: StepContext): Promise<PhaseOutcome> {
    try {
      const step = this.#step(context);
      const spec = this.#spec(step, context);
      await this.#supervisor.run(spec);
      context.log(`started ${step.name} ${spec.version}: pid ${this.#supervisor.status(step.name)?.pid ?? '(starting)'}`);
      return done(spec.version);
    } catch (error) {
      return failed(asOtaError(error, 'APPLY_FAILED'));
    }
  }

  async healthCheck(context: StepContext): Promise<PhaseOutcome> {
    try {
      const step = this.#step(context);
      const running = (): string | undefined => {
        const status = this.#supervisor.status(step.name);
        if (!status || status.spec.version !== version(context)) return `${step.name} ${version(context)} is not supervised`;
        if (status.exits > 0) return `${step.name} ${version(context)} exited (${exitText(status.lastExit)}) ${status.exits} time(s) since it was started`;
        return undefined;
      };
      const notRunning = running();
      if (notRunning) return failed(new OtaError('HEALTH_CHECK_FAILED', notRunning));
      const exit = await this.#supervisor.nextExit(step.name, step.startTimeoutSeconds * 1000, context.signal);
      if (exit) return failed(new OtaError('HEALTH_CHECK_FAILED', `${step.name} ${version(context)} exited (${exitText(exit)}) within ${step.startTimeoutSeconds} s of starting`));
      const stillNot = running();
      if (stillNot) return failed(new OtaError('HEALTH_CHECK_FAILED', stillNot));
      if (step.healthCheck) {
        const answer = await this.#probe(step, context);
        if (answer) return failed(answer);
      }
      context.log(`${step.name} ${version(context)} stayed up for ${step.startTimeoutSeconds} s${step.healthCheck ? ' and answered its health check' : ''}`);
      return done(version(context));
    } catch (error) {
      return failed(asOtaError(error, 'HEALTH_CHECK_FAILED'));
    }
  }

  commit(context: StepContext): Promise<PhaseOutcome> {
    return Promise.resolve(done(version(context)));
  }

  async rollback(context: StepContext): Promise<PhaseOutcome> {
    try {
      const step = this.#step(context);
      const previous = await readPrevious(context);
      if (!previous) return done();
      const appDir = path.join(this.#appsRoot, step.name);
      if (previous.current) await switchCurrent(appDir, previous.current);
      else await rm(path.join(appDir, 'current'), { force: true });
      if (previous.spec) {
        // run() stops the new version before it starts the previous one, and does nothing if that already runs.
        await this.#supervisor.run(previous.spec);
        context.log(`back to ${step.name} ${previous.spec.version}`);
        return done(previous.spec.version);
      }
      await this.#supervisor.remove(step.name);
      context.log(`${step.name} had no previous version: stopped`);
      return done();
    } catch (error) {
      return failed(new OtaError('ROLLBACK_FAILED', (error as Error).message, { cause: error }));
    }
  }

  async #recordPrevious(context: StepContext, step: ProcessStep): Promise<void> {
    if (await readPrevious(context)) return;
    let current: string | null = null;
    try {
      current = await readlink(path.join(this.#appsRoot, step.name, 'current'));
    } catch {
      // First install of this app.
    }
    const previous: Previous = { current, spec: this.#supervisor.spec(step.name) ?? null };
    const file = path.join(context.workDir, 'process-previous.json');
    await writeFile(`${file}.tmp`, JSON.stringify(previous));
    await rename(`${file}.tmp`, file);
  }

  #versionDir(step: ProcessStep, context: StepContext): string {
    return path.join(this.#appsRoot, step.name, version(context));
  }

  #spec(step: ProcessStep, context: StepContext): AppSpec {
    const dir = this.#versionDir(step, context);
    const [first, ...rest] = step.command;
    const file = first?.startsWith('./') ? path.join(dir, first.slice(2)) : (first ?? '');
    return { name: step.name, version: version(context), command: [file, ...rest], cwd: step.workingDirectory ?? dir, env: step.env };
  }

  /** Polls the health command or URL until it answers OK or its timeout passes; the failure, or undefined. */
  async #probe(step: ProcessStep, context: StepContext): Promise<OtaError | undefined> {
    const check = step.healthCheck;
    if (!check) return undefined;
    const deadline = Date.now() + check.timeoutSeconds * 1000;
    let last = 'no answer';
    while (!context.signal.aborted) {
      const remaining = deadline - Date.now();
      if (check.url) {
        try {
          const response = await fetch(check.url, { signal: AbortSignal.any([context.signal, AbortSignal.timeout(Math.max(100, remaining))]) });
          if (response.ok) return undefined;
          last = `HTTP ${response.status}`;
        } catch (error) {
          last = (error as Error).message;
        }
      } else if (check.command) {
        const [first, ...args] = check.command;
        const file = first?.startsWith('./') ? path.join(this.#versionDir(step, context), first.slice(2)) : (first ?? '');
        const result = await runCommand(file, args, { timeoutMs: Math.max(100, remaining), log: context.log, signal: context.signal, cwd: this.#versionDir(step, context) });
        if (result.exitCode === 0) return undefined;
        last = `${describeExit(result)}: ${result.tail}`;
      }
      if (Date.now() + 500 >= deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    return new OtaError('HEALTH_CHECK_TIMEOUT', `${step.name} ${version(context)} did not answer its health check within ${check.timeoutSeconds} s (last: ${last})`);
  }

  #step(context: StepContext): ProcessStep {
    const properties = context.step.handlerProperties ?? {};
    const invalid = (why: string): OtaError => new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: edge-ota/process:1 ${why}`);
    const { name, command, workingDirectory, env, startTimeoutSeconds, healthCheck } = properties;
    if (typeof name !== 'string' || !safeSegment.test(name)) throw invalid('needs handlerProperties.name (letters, digits, . _ + -)');
    if (!safeSegment.test(version(context))) throw invalid(`cannot use version ${version(context)} as a directory name`);
    if (!isStringArray(command) || command.length === 0) throw invalid('needs handlerProperties.command as a non-empty array of strings');
    let cwd: string | undefined;
    if (workingDirectory !== undefined) {
      if (typeof workingDirectory !== 'string') throw invalid('workingDirectory must be a string');
      cwd = path.resolve(workingDirectory);
      if (!this.#allowedRoots.some((root) => cwd === root || cwd?.startsWith(`${root}${path.sep}`))) {
        throw invalid(`workingDirectory ${cwd} is outside the allowed roots (${this.#allowedRoots.join(', ')})`);
      }
    }
    if (env !== undefined && (typeof env !== 'object' || env === null || !Object.values(env).every((v) => typeof v === 'string'))) throw invalid('env must map names to strings');
    const timeout = startTimeoutSeconds ?? this.#defaultStartTimeout;
    if (typeof timeout !== 'number' || !(timeout > 0)) throw invalid('startTimeoutSeconds must be a positive number');
    let check: ProcessStep['healthCheck'];
    if (healthCheck !== undefined) {
      const h = (healthCheck ?? {}) as Record<string, unknown>;
      const checkTimeout = h.timeoutSeconds ?? 30;
      if (typeof checkTimeout !== 'number' || !(checkTimeout > 0)) throw invalid('healthCheck.timeoutSeconds must be a positive number');
      if (isStringArray(h.command) && h.command.length > 0) check = { command: h.command, timeoutSeconds: checkTimeout };
      else if (typeof h.url === 'string' && /^https?:\/\//.test(h.url)) check = { url: h.url, timeoutSeconds: checkTimeout };
      else throw invalid('healthCheck needs a command (array of strings) or an http(s) url');
    }
    return { name, command, workingDirectory: cwd, env: (env ?? {}) as Record<string, string>, startTimeoutSeconds: timeout, healthCheck: check };
  }
}

function version(context: StepContext): string {
  return context.updateId.version;
}

/** Points <appDir>/current at `target` atomically (a new link renamed over the old one). */
async function switchCurrent(appDir: string, target: string): Promise<void> {
  const link = path.join(appDir, 'current');
  const staged = `${link}.${process.pid}.tmp`;
  await rm(staged, { force: true });
  await symlink(target, staged);
  await rename(staged, link);
}

async function readPrevious(context: StepContext): Promise<Previous | undefined> {
  try {
    return JSON.parse(await readFile(path.join(context.workDir, 'process-previous.json'), 'utf8')) as Previous;
  } catch {
    return undefined;
  }
}

function exitText(exit: { code: number | null; signal: string | null } | undefined): string {
  if (!exit) return 'unknown';
  return exit.signal ? `signal ${exit.signal}` : `code ${exit.code ?? '?'}`;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === 'string');
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

function asOtaError(error: unknown, code: 'INSTALL_FAILED' | 'APPLY_FAILED' | 'HEALTH_CHECK_FAILED'): OtaError {
  return error instanceof OtaError ? error : new OtaError(code, (error as Error).message, { cause: error });
}
