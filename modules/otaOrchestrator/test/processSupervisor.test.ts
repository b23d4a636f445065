import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AppSpec } from '../src/processSupervisor.ts';
import { ProcessSupervisor, isAlive } from '../src/processSupervisor.ts';

// What a crashed orchestrator leaves behind: apps still running in their own process groups, and a state file
// naming their pids. The next orchestrator must stop exactly those, never a process that merely got the same pid.

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  for (let waited = 0; ; waited += 20) {
    const value = probe();
    if (value) return value;
    if (waited >= timeoutMs) throw new Error(`waited ${timeoutMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('process supervisor after a crash', () => {
  let root: string;
  let supervisor: ProcessSupervisor | undefined;
  let pids: number[];
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'supervisor-'));
    pids = [];
  });
  afterEach(async () => {
    await supervisor?.stop();
    supervisor = undefined;
    for (const pid of pids) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  });

  /** A process started the way the supervisor starts apps, by "the previous orchestrator". */
  const leftover = (env: Record<string, string>) => {
    const child = spawn('sleep', ['600'], { env: { ...process.env, ...env }, detached: true, stdio: 'ignore' });
    child.unref();
    pids.push(child.pid as number);
    return child.pid as number;
  };
  const spec: AppSpec = { name: 'my-app', version: '1.0.0', command: ['sleep', '600'], cwd: tmpdir(), env: {} };
  const stateWith = (pid: number) => writeFileSync(path.join(root, 'state.json'), JSON.stringify({ apps: { 'my-app': { ...spec, pid } } }));

  it('stops the copy a crashed orchestrator left running and starts one it supervises', async () => {
    const old = leftover({ EDGE_OTA_APP: 'my-app' });
    stateWith(old);
    supervisor = new ProcessSupervisor({ stateFile: path.join(root, 'state.json'), stopTimeoutMs: 2_000 });
    await supervisor.start();
    await until('the leftover to be gone', () => !isAlive(old));
    const fresh = await until('a supervised copy', () => supervisor?.status('my-app')?.pid);
    pids.push(fresh);
    expect(fresh).not.toBe(old);
    expect(isAlive(fresh)).toBe(true);
  });

  it('leaves alone a process that reuses the recorded pid but is not the app', async () => {
    const stranger = leftover({ EDGE_OTA_APP: 'someone-else' });
    stateWith(stranger);
    supervisor = new ProcessSupervisor({ stateFile: path.join(root, 'state.json'), stopTimeoutMs: 2_000 });
    await supervisor.start();
    const fresh = await until('a supervised copy', () => supervisor?.status('my-app')?.pid);
    pids.push(fresh);
    expect(isAlive(stranger)).toBe(true);
  });

  it('restarts an app that cannot even be spawned with backoff, without throwing', async () => {
    supervisor = new ProcessSupervisor({ stateFile: path.join(root, 'state.json'), initialBackoffMs: 10, maxBackoffMs: 50 });
    await supervisor.run({ ...spec, command: [path.join(root, 'no-such-program')] });
    await until('three failed starts', () => (supervisor?.status('my-app')?.exits ?? 0) >= 3);
    await supervisor.remove('my-app');
    expect(supervisor.status('my-app')).toBeUndefined();
  });
});
