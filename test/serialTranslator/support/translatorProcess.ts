import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { watchProcess } from '../../../cloud/hubEmulator/src/index.ts';
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
  const watched = watchProcess(child, {
    parse: (line) => line,
    ...(process.env.SERIAL_TEST_VERBOSE ? { onLine: (line: string) => void process.stderr.write(`[serialTranslator] ${line}\n`) } : {}),
  });
  const waitForLine = (pattern: RegExp, timeoutMs = 30_000): Promise<string> => watched.waitFor((line) => pattern.test(line), `serialTranslator output ${String(pattern)}`, timeoutMs);
  const translator: TranslatorProcess = {
    child,
    lines: watched.items,
    waitForLine,
    stop: () => watched.stop(),
    kill: () => watched.stop('SIGKILL'),
  };
  try {
    await waitForLine(/serialTranslator ready/);
  } catch (error) {
    await translator.kill();
    throw error;
  }
  return translator;
}
