import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { watchProcess } from '../../src/index.ts';
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
  const watched = watchProcess<ProbeEvent>(child, {
    itemsFrom: 'stdout',
    parse: (line) => {
      try {
        return JSON.parse(line) as ProbeEvent;
      } catch {
        return undefined;
      }
    },
  });
  let nextId = 1;
  const waitFor = (predicate: (event: ProbeEvent) => boolean, what: string, timeoutMs = 15_000): Promise<ProbeEvent> => watched.waitFor(predicate, what, timeoutMs);
  const moduleProcess: ModuleProcess = {
    events: watched.items,
    waitFor,
    command(command, timeoutMs) {
      const id = nextId++;
      child.stdin.write(`${JSON.stringify({ ...command, id })}\n`);
      return waitFor((e) => e.type === 'result' && e.id === id, `result of ${JSON.stringify(command)}`, timeoutMs);
    },
    stop: () => watched.stop(),
  };
  await waitFor((e) => e.type === 'ready', 'module ready', 30_000);
  return moduleProcess;
}
