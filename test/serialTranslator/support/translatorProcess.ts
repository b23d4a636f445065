import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { HubInfo } from '../../../cloud/hubEmulator/src/index.ts';
import { edgeModuleEnvironment } from '../../../cloud/hubEmulator/test/support/moduleProcess.ts';

const mainFile = fileURLToPath(new URL('../../../modules/serialTranslator/src/main.ts', import.meta.url));

/** The real serialTranslator module as a process, with aziot-edged's environment plus its own SERIAL_* settings. */
export interface TranslatorProcess {
  readonly child: ChildProcess;
  readonly lines: string[];
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGTERM, then SIGKILL after 10 s. */
  stop(): Promise<void>;
  /** SIGKILL at once: a power cut for the module. */
  kill(): Promise<void>;
}

export async function startTranslatorProcess(options: { hub: HubInfo; deviceId: string; generationId: string; env: Record<string, string> }): Promise<TranslatorProcess> {
  // PATH only from the parent: the module must trust the hub through the workload API, as in a container.
  const env = {
    PATH: process.env.PATH ?? '',
    ...edgeModuleEnvironment(options.hub, options.deviceId, 'serialTranslator', options.generationId),
    ...options.env,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', mainFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  const collect = (line: string): void => {
    lines.push(line);
    if (process.env.SERIAL_TEST_VERBOSE) process.stderr.write(`[serialTranslator] ${line}\n`);
    for (const listener of listeners) listener();
  };
  createInterface({ input: child.stdout }).on('line', collect);
  createInterface({ input: child.stderr }).on('line', collect);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      for (const listener of listeners) listener();
      resolve();
    }),
  );
  const ended = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const waitForLine = (pattern: RegExp, timeoutMs = 30_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = lines.find((l) => pattern.test(l));
        if (found) finish(() => resolve(found));
        else if (ended()) finish(() => reject(new Error(`serialTranslator ended before ${pattern}:\n${lines.slice(-20).join('\n')}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${pattern}:\n${lines.slice(-20).join('\n')}`))), timeoutMs);
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        listeners.delete(check);
        settle();
      };
      listeners.add(check);
      check();
    });
  const translator: TranslatorProcess = {
    child,
    lines,
    waitForLine,
    async stop() {
      if (ended()) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      if (ended()) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
  try {
    await waitForLine(/serialTranslator ready/);
  } catch (error) {
    await translator.kill();
    throw error;
  }
  return translator;
}
