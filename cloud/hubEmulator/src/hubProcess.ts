import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HubInfo } from './app.ts';

// Starts the emulator as its own process, exactly as `npm run hub` does, for tests, the local runner and
// the demo. Each emulator gets its own loopback address so several can run in parallel on 443/8883.

export interface HubProcess {
  readonly info: HubInfo;
  readonly stateDir: string;
  readonly process: ChildProcess;
  /** SIGTERM, then SIGKILL if it has not exited within the grace period. */
  stop(): Promise<void>;
}

export interface HubProcessOptions {
  stateDir?: string;
  /** A fixed address; by default a random 127.x.y.z is chosen (and another one tried if it is taken). */
  address?: string;
  caDir?: string;
  eventGridWebhooks?: ReadonlyArray<string>;
  verbose?: boolean;
  startTimeoutMs?: number;
}

const mainFile = path.join(path.dirname(fileURLToPath(import.meta.url)), 'main.ts');
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export function randomLoopbackAddress(): string {
  const octet = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1));
  return `127.${octet(16, 250)}.${octet(0, 255)}.${octet(1, 254)}`;
}

export async function startHubProcess(options: HubProcessOptions = {}): Promise<HubProcess> {
  const stateDir = options.stateDir ?? mkdtempSync(path.join(tmpdir(), 'hub-'));
  const attempts = options.address ? 1 : 5;
  let lastError: Error | undefined;
  for (let attempt = 0; attempt < attempts; attempt += 1) {
    try {
      return await spawnOnce(stateDir, options.address ?? randomLoopbackAddress(), options);
    } catch (error) {
      lastError = error as Error;
      if (!/EADDRINUSE/.test(lastError.message)) break;
    }
  }
  throw lastError ?? new Error('hub emulator did not start');
}

async function spawnOnce(stateDir: string, address: string, options: HubProcessOptions): Promise<HubProcess> {
  const args = ['--import', 'tsx', '--conditions=source', mainFile, '--state-dir', stateDir, '--address', address, '--stop-on-stdin-eof'];
  if (options.caDir) args.push('--ca-dir', options.caDir);
  for (const url of options.eventGridWebhooks ?? []) args.push('--event-grid-webhook', url);
  if (options.verbose) args.push('--verbose');
  // Our end of its stdin closes when this process dies in any way, which stops the emulator (no orphans).
  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    if (options.verbose) process.stderr.write(chunk);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    running.delete(child);
    resolve();
  }));
  await new Promise<void>((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hub emulator did not report ready within ${options.startTimeoutMs ?? 30_000} ms: ${stderr}`));
    }, options.startTimeoutMs ?? 30_000);
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (stdout.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hub emulator exited with ${code ?? 'a signal'} before it was ready: ${stderr.trim()}`));
    });
  });
  const info = JSON.parse(readFileSync(path.join(stateDir, 'hub.json'), 'utf8')) as HubInfo;
  return {
    info,
    stateDir,
    process: child,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
