import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { watchProcess } from '../../cloud/hubEmulator/src/index.ts';
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
  const watched = watchProcess(child, { parse: (line) => line });
  const waitForLine = (pattern: RegExp, timeoutMs = 30_000): Promise<string> => watched.waitFor((line) => pattern.test(line), `orchestrator output ${String(pattern)}`, timeoutMs);
  const orchestrator: OrchestratorProcess = {
    child,
    lines: watched.items,
    exited: watched.exited,
    waitForLine,
    stop: () => watched.stop(),
  };
  await waitForLine(/otaOrchestrator ready/);
  return orchestrator;
}
