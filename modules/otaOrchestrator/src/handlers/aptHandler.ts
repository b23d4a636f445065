import { OtaError } from '@edge-ota/common';
import type { ResultCodeName } from '@edge-ota/common';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { CommandResult } from './command.ts';
import { describeExit, program, runCommand } from './command.ts';
import type { PhaseOutcome, StepContext, UpdateHandler } from './updateHandler.ts';
import { done, failed } from './updateHandler.ts';

// `microsoft/apt:1` (ADU's apt handler). The step's file is an APT manifest:
// `{ "name": "contoso-app", "version": "1.0.0", "packages": [ { "name": "foo", "version": "1.2.3" } ] }`;
// handlerProperties may carry `installedCriteria` (accepted for ADU compatibility; the installed package versions
// decide). validate runs `apt-get update` and a dry run, so an unknown package fails before anything changes;
// install records the versions installed before it (the rollback target) and then installs the pinned versions.

export interface AptHandlerOptions {
  /** Directory holding apt-get and dpkg-query (tests put fakes here); unset means PATH. */
  binDir?: string;
  updateTimeoutSeconds?: number;
  installTimeoutSeconds?: number;
  queryTimeoutSeconds?: number;
}

export interface AptPackage {
  name: string;
  /** Unset installs whatever version the repositories offer (ADU allows this). */
  version: string | undefined;
}

export interface AptManifest {
  name: string;
  version: string;
  packages: AptPackage[];
}

// Debian policy names and versions; anything else could smuggle an option into apt-get's argv.
const packageName = /^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$/;
const packageVersion = /^[A-Za-z0-9.+~:-]+$/;
const previousFile = 'apt-previous.json';

/** Versions before install; null = the package was not installed. */
type PreviousVersions = Record<string, string | null>;

export class AptHandler implements UpdateHandler {
  readonly ids = ['microsoft/apt:1'];
  readonly needsLocalFiles = true;
  readonly #binDir: string | undefined;
  readonly #timeouts: { update: number; install: number; query: number };

  constructor(options: AptHandlerOptions = {}) {
    this.#binDir = options.binDir;
    this.#timeouts = {
      update: (options.updateTimeoutSeconds ?? 600) * 1000,
      install: (options.installTimeoutSeconds ?? 3600) * 1000,
      query: (options.queryTimeoutSeconds ?? 30) * 1000,
    };
  }

  async isInstalled(context: StepContext): Promise<boolean> {
    // At verify time the manifest is not downloaded yet: unknown, and the engine asks again before install.
    const file = manifestFile(context);
    if (!file.path || !(await isFile(file.path))) return false;
    const manifest = await readAptManifest(file.path);
    for (const pkg of manifest.packages) {
      const installed = await this.#installedVersion(context, pkg.name);
      if (installed === null || (pkg.version !== undefined && installed !== pkg.version)) return false;
    }
    return manifest.packages.length > 0;
  }

  async validate(context: StepContext): Promise<PhaseOutcome> {
    try {
      const manifest = await this.#manifest(context);
      await this.#update(context, 'INSTALL_FAILED');
      const dryRun = await this.#apt(context, ['install', '--dry-run', '-y', '--allow-downgrades', ...pins(manifest)], this.#timeouts.install);
      if (dryRun.exitCode !== 0) {
        return failed(new OtaError('INSTALL_FAILED', `apt-get dry run refused ${manifest.name} ${manifest.version} (${describeExit(dryRun)}): ${dryRun.tail}`));
      }
      return done();
    } catch (error) {
      return failed(asOtaError(error, 'INSTALL_FAILED'));
    }
  }

  async install(context: StepContext): Promise<PhaseOutcome> {
    try {
      const manifest = await this.#manifest(context);
      // Recorded once, before apt-get can change anything: a resumed install must not mistake its own half-done
      // work for the state to go back to. No file means apt-get install never started.
      if ((await readPrevious(context.workDir)) === undefined) {
        const previous: PreviousVersions = {};
        for (const pkg of manifest.packages) previous[pkg.name] = await this.#installedVersion(context, pkg.name);
        await writeAtomic(path.join(context.workDir, previousFile), JSON.stringify(previous));
        context.log(`versions before install: ${Object.entries(previous).map(([n, v]) => `${n}=${v ?? '(none)'}`).join(' ')}`);
      }
      await this.#update(context, 'INSTALL_FAILED');
      const result = await this.#apt(context, ['install', '-y', '--allow-downgrades', ...dpkgOptions, ...pins(manifest)], this.#timeouts.install);
      if (result.exitCode !== 0) {
        return failed(new OtaError('INSTALL_FAILED', `apt-get install ${manifest.name} ${manifest.version} ended with ${describeExit(result)}: ${result.tail}`));
      }
      // apt-get can exit 0 and still leave a package elsewhere (a hold, a pin); believe dpkg.
      for (const pkg of manifest.packages) {
        const installed = await this.#installedVersion(context, pkg.name);
        if (installed === null || (pkg.version !== undefined && installed !== pkg.version)) {
          return failed(new OtaError('INSTALL_FAILED', `after apt-get install, ${pkg.name} is ${installed ?? 'not installed'} instead of ${pkg.version ?? 'installed'}`));
        }
      }
      return done(manifest.version);
    } catch (error) {
      return failed(asOtaError(error, 'INSTALL_FAILED'));
    }
  }

  apply(): Promise<PhaseOutcome> {
    return Promise.resolve(done());
  }

  async rollback(context: StepContext): Promise<PhaseOutcome> {
    try {
      const previous = await readPrevious(context.workDir);
      if (previous === undefined) {
        context.log('apt-get install never started: nothing to roll back');
        return done();
      }
      const reinstall: string[] = [];
      const remove: string[] = [];
      for (const [name, version] of Object.entries(previous)) {
        const now = await this.#installedVersion(context, name);
        if (now === version) continue;
        if (version === null) remove.push(name);
        else reinstall.push(`${name}=${version}`);
      }
      if (reinstall.length > 0) {
        const result = await this.#apt(context, ['install', '-y', '--allow-downgrades', ...dpkgOptions, ...reinstall], this.#timeouts.install);
        if (result.exitCode !== 0) {
          return failed(new OtaError('ROLLBACK_FAILED', `could not reinstall the previous versions ${reinstall.join(' ')} (${describeExit(result)}): ${result.tail}`));
        }
      }
      if (remove.length > 0) {
        const result = await this.#apt(context, ['remove', '-y', ...dpkgOptions, ...remove], this.#timeouts.install);
        if (result.exitCode !== 0) {
          return failed(new OtaError('ROLLBACK_FAILED', `could not remove ${remove.join(' ')}, which were not installed before (${describeExit(result)}): ${result.tail}`));
        }
      }
      // Report only what dpkg confirms, never what was intended.
      for (const [name, version] of Object.entries(previous)) {
        const now = await this.#installedVersion(context, name);
        if (now !== version) return failed(new OtaError('ROLLBACK_FAILED', `${name} is ${now ?? 'not installed'} after rollback instead of ${version ?? 'not installed'}`));
      }
      context.log(`rolled back: ${[...reinstall, ...remove.map((n) => `-${n}`)].join(' ') || 'nothing had changed'}`);
      return done();
    } catch (error) {
      // Whatever broke (dpkg-query included), the target is now in an unknown state: that is a failed rollback.
      return failed(isRollbackFailure(error) ? error : new OtaError('ROLLBACK_FAILED', (error as Error).message, { cause: error }));
    }
  }

  async #manifest(context: StepContext): Promise<AptManifest> {
    const file = manifestFile(context);
    if (!file.path) throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: the APT manifest ${file.fileName} was not downloaded`);
    return readAptManifest(file.path);
  }

  async #update(context: StepContext, code: ResultCodeName): Promise<void> {
    const result = await this.#apt(context, ['update'], this.#timeouts.update);
    if (result.exitCode !== 0) throw new OtaError(code, `apt-get update ended with ${describeExit(result)}: ${result.tail}`);
  }

  /** The installed version, or null when dpkg does not have the package installed. */
  async #installedVersion(context: StepContext, name: string): Promise<string | null> {
    const result = await this.#run(context, 'dpkg-query', ['-W', '-f', '${db:Status-Status}\t${Version}', name], this.#timeouts.query);
    // dpkg-query exits 1 for a package it has never heard of.
    if (result.exitCode === 1) return null;
    if (result.exitCode !== 0) throw new OtaError('INSTALL_FAILED', `dpkg-query ${name} ended with ${describeExit(result)}: ${result.tail}`);
    const [status, version] = result.stdout.trim().split('\t');
    // Removed but not purged packages still have a version; they are not installed.
    return status === 'installed' && version ? version : null;
  }

  #apt(context: StepContext, args: string[], timeoutMs: number): Promise<CommandResult> {
    return this.#run(context, 'apt-get', args, timeoutMs);
  }

  async #run(context: StepContext, name: string, args: string[], timeoutMs: number): Promise<CommandResult> {
    const file = program(name, this.#binDir);
    if (name === 'apt-get') context.log(`run apt-get ${args.join(' ')}`);
    try {
      return await runCommand(file, args, {
        timeoutMs,
        log: context.log,
        signal: context.signal,
        env: {
          ...process.env,
          DEBIAN_FRONTEND: 'noninteractive',
          LC_ALL: 'C',
          ...(this.#binDir ? { PATH: `${this.#binDir}${path.delimiter}${process.env.PATH ?? ''}` } : {}),
        },
      });
    } catch (error) {
      throw new OtaError('INSTALL_FAILED', `cannot run ${file}: ${(error as Error).message}`, { cause: error });
    }
  }
}

// Keep the configuration files on the device: an unattended update must never stop at a dpkg prompt.
const dpkgOptions = ['-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold'];

function pins(manifest: AptManifest): string[] {
  return manifest.packages.map((p) => (p.version === undefined ? p.name : `${p.name}=${p.version}`));
}

function manifestFile(context: StepContext): StepContext['files'][number] {
  const file = context.files.find((f) => f.fileName.toLowerCase().endsWith('.json')) ?? context.files[0];
  if (!file) throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: microsoft/apt:1 needs an APT manifest file`);
  return file;
}

export async function readAptManifest(file: string): Promise<AptManifest> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new OtaError('INSTALL_FAILED', `APT manifest ${path.basename(file)} is not JSON: ${(error as Error).message}`, { cause: error });
  }
  return parseAptManifest(raw);
}

export function parseAptManifest(raw: unknown): AptManifest {
  const invalid = (why: string): OtaError => new OtaError('INSTALL_FAILED', `APT manifest: ${why}`);
  if (typeof raw !== 'object' || raw === null) throw invalid('not an object');
  const { name, version, packages } = raw as Record<string, unknown>;
  if (typeof name !== 'string' || !name) throw invalid('name is required');
  if (typeof version !== 'string' || !version) throw invalid('version is required');
  if (!Array.isArray(packages) || packages.length === 0) throw invalid('packages must be a non-empty array');
  const seen = new Set<string>();
  const parsed = packages.map((entry: unknown, index): AptPackage => {
    const pkg = (entry ?? {}) as Record<string, unknown>;
    if (typeof pkg.name !== 'string' || !packageName.test(pkg.name)) throw invalid(`packages[${index}].name is not a Debian package name`);
    if (pkg.version !== undefined && (typeof pkg.version !== 'string' || !packageVersion.test(pkg.version))) throw invalid(`packages[${index}].version is not a Debian version`);
    if (seen.has(pkg.name)) throw invalid(`package ${pkg.name} is listed twice`);
    seen.add(pkg.name);
    return { name: pkg.name, version: pkg.version };
  });
  return { name, version, packages: parsed };
}

async function readPrevious(workDir: string): Promise<PreviousVersions | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(workDir, previousFile), 'utf8');
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text) as PreviousVersions;
  } catch (error) {
    // apt-get may have run, and what to go back to is lost: say so rather than guess.
    throw new OtaError('ROLLBACK_FAILED', `the record of the versions before install is unreadable: ${(error as Error).message}`, { cause: error });
  }
}

async function writeAtomic(file: string, text: string): Promise<void> {
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

function isRollbackFailure(error: unknown): error is OtaError {
  return error instanceof OtaError && error.code === 'ROLLBACK_FAILED';
}

function asOtaError(error: unknown, code: ResultCodeName): OtaError {
  return error instanceof OtaError ? error : new OtaError(code, (error as Error).message, { cause: error });
}
