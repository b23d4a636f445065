import { OtaError } from '@edge-ota/common';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PhaseOutcome, StepContext, UpdateHandler } from './updateHandler.ts';
import { done, failed } from './updateHandler.ts';

// `edge-ota/file:1`: puts the step's files into a destination directory. handlerProperties:
// `{ "destination": "<dir under an allowed root>", "mode": "0644" }`. Each file is staged next to its target and
// renamed over it (atomic per file); what it replaces is kept in the job's work dir so rollback restores it.

export class FileHandler implements UpdateHandler {
  readonly ids = ['edge-ota/file:1'];
  readonly needsLocalFiles = true;
  readonly #allowedRoots: string[];

  /** Destinations must lie under one of these directories (defence in depth on top of the signature). */
  constructor(allowedRoots: ReadonlyArray<string>) {
    this.#allowedRoots = allowedRoots.map((root) => path.resolve(root));
  }

  #destination(context: StepContext): string {
    const destination = context.step.handlerProperties?.destination;
    if (typeof destination !== 'string' || destination.length === 0) {
      throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: handlerProperties.destination is required for edge-ota/file:1`);
    }
    const resolved = path.resolve(destination);
    if (!this.#allowedRoots.some((root) => resolved === root || resolved.startsWith(`${root}${path.sep}`))) {
      throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: destination ${resolved} is outside the allowed roots (${this.#allowedRoots.join(', ') || 'none configured'})`);
    }
    return resolved;
  }

  #mode(context: StepContext): number {
    const mode = context.step.handlerProperties?.mode;
    if (mode === undefined) return 0o644;
    if (typeof mode !== 'string' || !/^0?[0-7]{3}$/.test(mode)) throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: mode must be an octal string like "0644"`);
    return Number.parseInt(mode, 8);
  }

  async isInstalled(context: StepContext): Promise<boolean> {
    const destination = this.#destination(context);
    for (const file of context.files) {
      if (!(await sameContent(path.join(destination, file.fileName), file.sha256, file.sizeInBytes))) return false;
    }
    return context.files.length > 0;
  }

  async install(context: StepContext): Promise<PhaseOutcome> {
    try {
      const destination = this.#destination(context);
      const mode = this.#mode(context);
      await mkdir(destination, { recursive: true });
      const backups = path.join(context.workDir, 'backup');
      await mkdir(backups, { recursive: true });
      const journal: Record<string, 'replaced' | 'created'> = await readJournal(context.workDir);
      for (const file of context.files) {
        if (!file.path) throw new OtaError('INSTALL_FAILED', `file ${file.fileName} was not downloaded`);
        const target = path.join(destination, file.fileName);
        // Resumed after a crash: a file already in place with the right content is not touched again.
        if (await sameContent(target, file.sha256, file.sizeInBytes)) continue;
        if (journal[file.fileName] === undefined) {
          const existed = await exists(target);
          if (existed) await copyFile(target, path.join(backups, file.fileName));
          journal[file.fileName] = existed ? 'replaced' : 'created';
          await writeJournal(context.workDir, journal);
        }
        const staged = `${target}.edge-ota-${process.pid}.tmp`;
        await copyFile(file.path, staged);
        await chmod(staged, mode);
        await rename(staged, target);
        context.log(`installed ${target}`);
      }
      return done();
    } catch (error) {
      return failed(error instanceof OtaError ? error : new OtaError('INSTALL_FAILED', (error as Error).message, { cause: error }));
    }
  }

  apply(): Promise<PhaseOutcome> {
    return Promise.resolve(done());
  }

  async rollback(context: StepContext): Promise<PhaseOutcome> {
    try {
      const destination = this.#destination(context);
      const journal = await readJournal(context.workDir);
      for (const [fileName, what] of Object.entries(journal)) {
        const target = path.join(destination, fileName);
        if (what === 'created') await rm(target, { force: true });
        else await copyFile(path.join(context.workDir, 'backup', fileName), target);
        context.log(`rolled back ${target} (${what})`);
      }
      return done();
    } catch (error) {
      return failed(new OtaError('ROLLBACK_FAILED', (error as Error).message, { cause: error }));
    }
  }
}

async function readJournal(workDir: string): Promise<Record<string, 'replaced' | 'created'>> {
  try {
    return JSON.parse(await readFile(path.join(workDir, 'file-journal.json'), 'utf8')) as Record<string, 'replaced' | 'created'>;
  } catch {
    return {};
  }
}

async function writeJournal(workDir: string, journal: Record<string, 'replaced' | 'created'>): Promise<void> {
  const file = path.join(workDir, 'file-journal.json');
  await writeFile(`${file}.tmp`, JSON.stringify(journal));
  await rename(`${file}.tmp`, file);
}

async function exists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}

async function sameContent(file: string, sha256: string, size: number): Promise<boolean> {
  try {
    if ((await stat(file)).size !== size) return false;
  } catch {
    return false;
  }
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) hash.update(chunk);
  return hash.digest('base64') === sha256;
}
