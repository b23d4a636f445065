import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { HubInfo } from '../../src/index.ts';

const probeFile = fileURLToPath(new URL('../fixtures/probeModule.ts', import.meta.url));

export interface ProbeEvent {
  type: 'ready' | 'desired' | 'input' | 'method' | 'result' | 'error';
  [key: string]: unknown;
}

/** A module process started with exactly the environment aziot-edged gives a module, and nothing else of ours. */
export interface ModuleProcess {
  readonly events: ProbeEvent[];
  waitFor(predicate: (event: ProbeEvent) => boolean, what: string, timeoutMs?: number): Promise<ProbeEvent>;
  command(command: Record<string, unknown>, timeoutMs?: number): Promise<ProbeEvent>;
  stop(): Promise<void>;
}

export function edgeModuleEnvironment(info: HubInfo, deviceId: string, moduleId: string, generationId: string): Record<string, string> {
  return {
    IOTEDGE_WORKLOADURI: info.workloadUri.replace('{deviceId}', encodeURIComponent(deviceId)),
    IOTEDGE_DEVICEID: deviceId,
    IOTEDGE_MODULEID: moduleId,
    IOTEDGE_IOTHUBHOSTNAME: info.hostName,
    IOTEDGE_GATEWAYHOSTNAME: info.hostName,
    IOTEDGE_AUTHSCHEME: 'sasToken',
    IOTEDGE_MODULEGENERATIONID: generationId,
    IOTEDGE_APIVERSION: '2019-01-30',
  };
}

export async function startModuleProcess(environment: Record<string, string>): Promise<ModuleProcess> {
  // PATH only from the parent: no NODE_EXTRA_CA_CERTS, so the module must trust the hub through the workload API.
  const child = spawn(process.execPath, ['--import', 'tsx', probeFile], {
    env: { PATH: process.env.PATH ?? '', ...environment },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const events: ProbeEvent[] = [];
  const listeners = new Set<() => void>();
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      events.push(JSON.parse(line) as ProbeEvent);
    } catch {
      return;
    }
    for (const listener of listeners) listener();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    for (const listener of listeners) listener();
    resolve();
  }));
  let nextId = 1;
  const waitFor = (predicate: (event: ProbeEvent) => boolean, what: string, timeoutMs = 15_000): Promise<ProbeEvent> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = events.find(predicate);
        if (found) finish(() => resolve(found));
        else if (child.exitCode !== null) finish(() => reject(new Error(`module exited (${child.exitCode}) before ${what}: ${stderr}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${what}; module stderr: ${stderr}`))), timeoutMs);
      const finish = (settle: () => void): void => {
        clearTimeout(timer);
        listeners.delete(check);
        settle();
      };
      listeners.add(check);
      check();
    });
  const moduleProcess: ModuleProcess = {
    events,
    waitFor,
    command(command, timeoutMs) {
      const id = nextId++;
      child.stdin.write(`${JSON.stringify({ ...command, id })}\n`);
      return waitFor((e) => e.type === 'result' && e.id === id, `result of ${JSON.stringify(command)}`, timeoutMs);
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  await waitFor((e) => e.type === 'ready', 'module ready', 30_000);
  return moduleProcess;
}
