import { OtaError, stepInstalledCriteria } from '@edge-ota/common';
import { spawn } from 'node:child_process';
import { chmod, stat } from 'node:fs/promises';
import path from 'node:path';
import type { PhaseOutcome, StepContext, UpdateHandler } from './updateHandler.ts';
import { done, failed } from './updateHandler.ts';

// `microsoft/script:1` (ADU's script handler) and `edge-ota/script:1`. handlerProperties:
// `{ "scriptFileName": "install.sh", "arguments": "--flag value", "installedCriteria": "...", "timeoutSeconds": 300 }`.
// The script runs from the step's downloaded files with `--action-install | --action-apply | --action-cancel |
// --action-is-installed`, plus `--work-folder <dir>` and the step's arguments. Exit code 0 is success; for
// is-installed, 0 means installed and 1 not installed. Output goes to the job log; a script that outlives its
// timeout is killed (SIGTERM, then SIGKILL) and reported as failed.

const maxLoggedLines = 200;

export class ScriptHandler implements UpdateHandler {
  readonly ids = ['microsoft/script:1', 'edge-ota/script:1'];
  readonly needsLocalFiles = true;

  async isInstalled(context: StepContext): Promise<boolean> {
    const criteria = stepInstalledCriteria(context.step);
    // Before the download the script is not on disk yet: unknown, asked again before install.
    if (criteria === undefined || !(await isFile(this.#script(context)))) return false;
    const result = await this.#run(context, 'is-installed', ['--installed-criteria', criteria]);
    if (result.exitCode === 0) return true;
    if (result.exitCode === 1) return false;
    throw new OtaError('INSTALL_FAILED', `script --action-is-installed ended with ${describe(result)}`);
  }

  async install(context: StepContext): Promise<PhaseOutcome> {
    return this.#phase(context, 'install', 'INSTALL_FAILED');
  }

  async apply(context: StepContext): Promise<PhaseOutcome> {
    return this.#phase(context, 'apply', 'APPLY_FAILED');
  }

  async rollback(context: StepContext): Promise<PhaseOutcome> {
    return this.#phase(context, 'cancel', 'ROLLBACK_FAILED');
  }

  async #phase(context: StepContext, action: string, code: 'INSTALL_FAILED' | 'APPLY_FAILED' | 'ROLLBACK_FAILED'): Promise<PhaseOutcome> {
    try {
      const result = await this.#run(context, action, []);
      if (result.exitCode === 0) return done();
      return failed(new OtaError(code, `script --action-${action} ended with ${describe(result)}; last output: ${result.tail}`));
    } catch (error) {
      return failed(error instanceof OtaError ? error : new OtaError(code, (error as Error).message, { cause: error }));
    }
  }

  #script(context: StepContext): string {
    const name = context.step.handlerProperties?.scriptFileName;
    if (typeof name !== 'string') throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: handlerProperties.scriptFileName is required`);
    const file = context.files.find((f) => f.fileName === name);
    if (!file?.path) throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: script ${name} is not one of the step's files`);
    return file.path;
  }

  async #run(context: StepContext, action: string, extra: string[]): Promise<{ exitCode: number | null; signal: string | null; timedOut: boolean; tail: string }> {
    const script = this.#script(context);
    await chmod(script, 0o755);
    const argumentsText = context.step.handlerProperties?.arguments;
    const stepArguments = typeof argumentsText === 'string' && argumentsText.trim() ? argumentsText.trim().split(/\s+/) : [];
    const timeoutSeconds = Number(context.step.handlerProperties?.timeoutSeconds ?? 300);
    const args = [`--action-${action}`, '--work-folder', context.workDir, ...stepArguments, ...extra];
    context.log(`run ${path.basename(script)} ${args.join(' ')}`);
    return new Promise((resolve, reject) => {
      const child = spawn(script, args, { cwd: path.dirname(script), stdio: ['ignore', 'pipe', 'pipe'], signal: context.signal });
      const lines: string[] = [];
      let logged = 0;
      const collect = (chunk: Buffer): void => {
        for (const line of chunk.toString('utf8').split('\n')) {
          if (!line) continue;
          lines.push(line);
          if (lines.length > 20) lines.shift();
          if (logged++ < maxLoggedLines) context.log(`${action}: ${line}`);
        }
      };
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5_000).unref();
      }, (Number.isFinite(timeoutSeconds) && timeoutSeconds > 0 ? timeoutSeconds : 300) * 1000);
      child.on('error', (error) => {
        clearTimeout(timer);
        reject(new OtaError('INSTALL_FAILED', `cannot run ${path.basename(script)}: ${error.message}`, { cause: error }));
      });
      child.on('close', (exitCode, signal) => {
        clearTimeout(timer);
        resolve({ exitCode, signal, timedOut, tail: lines.slice(-3).join(' | ') });
      });
    });
  }
}

function describe(result: { exitCode: number | null; signal: string | null; timedOut: boolean }): string {
  if (result.timedOut) return 'a timeout (killed)';
  if (result.signal) return `signal ${result.signal}`;
  return `exit code ${result.exitCode ?? '?'}`;
}

async function isFile(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}
