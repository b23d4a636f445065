import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { HubInfo } from '../../cloud/hubEmulator/src/index.ts';
import { edgeModuleEnvironment } from '../../cloud/hubEmulator/test/support/moduleProcess.ts';

const mainFile = fileURLToPath(new URL('../../modules/otaOrchestrator/src/main.ts', import.meta.url));

/** The real otaOrchestrator module as a process, with aziot-edged's environment plus its own OTA_* settings. */
export interface OrchestratorProcess {
  readonly child: ChildProcess;
  readonly lines: string[];
  /** Resolves with the exit code or signal once the process has ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

export async function startOrchestratorProcess(options: {
  hub: HubInfo;
  deviceId: string;
  generationId: string;
  env: Record<string, string>;
}): Promise<OrchestratorProcess> {
  const env = {
    PATH: process.env.PATH ?? '',
    ...edgeModuleEnvironment(options.hub, options.deviceId, 'otaOrchestrator', options.generationId),
    ...options.env,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', mainFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  const collect = (line: string): void => {
    lines.push(line);
    for (const listener of listeners) listener();
  };
  createInterface({ input: child.stdout }).on('line', collect);
  createInterface({ input: child.stderr }).on('line', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      for (const listener of listeners) listener();
      resolve({ code, signal });
    }),
  );
  const waitForLine = (pattern: RegExp, timeoutMs = 30_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = lines.find((l) => pattern.test(l));
        if (found) finish(() => resolve(found));
        else if (child.exitCode !== null || child.signalCode !== null) finish(() => reject(new Error(`orchestrator ended before ${pattern}:\n${lines.slice(-20).join('\n')}`)));
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
  const orchestrator: OrchestratorProcess = {
    child,
    lines,
    exited,
    waitForLine,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
  await waitForLine(/otaOrchestrator ready/);
  return orchestrator;
}
