import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ProcessHandler } from '../src/handlers/processHandler.ts';
import { ProcessSupervisor, isAlive } from '../src/processSupervisor.ts';
import type { ArtifactServer } from './support/artifactServer.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import type { EngineHarness } from './support/engineHarness.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import type { Publisher } from './support/signedUpdates.ts';
import { createPublisher } from './support/signedUpdates.ts';

// edge-ota/process:1 through the real engine, with real child processes: a shell script that stays up, one that
// dies at once, and a node HTTP server with a health URL.

const sleeper = (label: string) => Buffer.from(`#!/bin/sh\necho "${label} $$" >> "$APP_LOG"\nexec sleep 600\n`);
const quitter = Buffer.from('#!/bin/sh\necho "cannot open config" >&2\nexit 3\n');
const server = Buffer.from(`import { createServer } from 'node:http';
createServer((req, res) => res.writeHead(req.url === '/healthz' ? 200 : 404).end('ok')).listen(Number(process.env.PORT), '127.0.0.1');
`);

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  for (let waited = 0; ; waited += 20) {
    const value = probe();
    if (value) return value;
    if (waited >= timeoutMs) throw new Error(`waited ${timeoutMs} ms for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

describe('process handler', () => {
  let publisher: Publisher;
  let artifacts: ArtifactServer;
  let harness: EngineHarness | undefined;
  let supervisors: ProcessSupervisor[];
  let pids: number[];
  let root: string;
  beforeAll(async () => {
    publisher = createPublisher();
    artifacts = await startArtifactServer();
  });
  afterAll(async () => {
    await artifacts.close();
  });
  beforeEach(() => {
    root = mkdtempSync(path.join(tmpdir(), 'process-'));
    supervisors = [];
    pids = [];
  });
  afterEach(async () => {
    await harness?.close();
    harness = undefined;
    for (const supervisor of supervisors) await supervisor.stop();
    // Nothing the test started may outlive it.
    for (const pid of pids) {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });

  const appsRoot = () => path.join(root, 'apps');
  const newSupervisor = () => {
    const supervisor = new ProcessSupervisor({ stateFile: path.join(root, 'supervisor.json'), logDir: path.join(root, 'logs'), initialBackoffMs: 20, maxBackoffMs: 200, stopTimeoutMs: 2_000 });
    supervisors.push(supervisor);
    return supervisor;
  };
  const pidOf = (supervisor: ProcessSupervisor) => {
    const pid = supervisor.status('my-app')?.pid;
    if (pid) pids.push(pid);
    return pid;
  };

  const install = async (supervisor: ProcessSupervisor, version: string, app: Buffer, extra: Record<string, unknown> = {}, command = ['./app.sh']) => {
    harness ??= startEngine(publisher, { root, extraHandlers: [new ProcessHandler({ appsRoot: appsRoot(), supervisor, allowedRoots: [root] })] });
    const fileName = command[0] === './app.sh' ? 'app.sh' : 'server.mjs';
    artifacts.put(fileName, app);
    const delivery = publisher.deliver({
      version,
      name: 'MyApp',
      files: { [fileName]: app },
      steps: [{
        handler: 'edge-ota/process:1',
        files: [fileName],
        handlerProperties: { name: 'my-app', command, env: { APP_LOG: path.join(root, 'app.log') }, startTimeoutSeconds: 1, ...extra },
      }],
    }, { baseUrl: artifacts.baseUrl });
    harness.engine.submit(delivery, 'method');
    await harness.engine.idle();
    return harness.feedback(delivery.workflow.id);
  };

  it('installs a version, starts it supervised, reports it running, and restarts it when it is killed', async () => {
    const supervisor = newSupervisor();
    const feedback = await install(supervisor, '1.0.0', sleeper('v1'));
    expect(steps(feedback).slice(-7)).toEqual(['run:started', 'run:succeeded', 'healthCheck:started', 'healthCheck:succeeded', 'commit:started', 'commit:succeeded', 'job:succeeded']);
    expect(feedback.at(-1)).toMatchObject({ installedVersion: '1.0.0' });
    expect(readlinkSync(path.join(appsRoot(), 'my-app', 'current'))).toBe('1.0.0');
    expect(readFileSync(path.join(appsRoot(), 'my-app', '1.0.0', 'app.sh'))).toEqual(sleeper('v1'));
    const pid = pidOf(supervisor);
    expect(pid && isAlive(pid)).toBe(true);
    expect(readFileSync(path.join(root, 'app.log'), 'utf8')).toBe(`v1 ${pid}\n`);

    process.kill(pid as number, 'SIGKILL');
    const restarted = await until('a restarted pid', () => { const next = pidOf(supervisor); return next !== pid && next; });
    expect(isAlive(restarted)).toBe(true);
    expect(supervisor.status('my-app')).toMatchObject({ exits: 1, lastExit: { signal: 'SIGKILL' } });
  });

  it('starts the apps again after the orchestrator restarts, and skips an update that already runs', async () => {
    const first = newSupervisor();
    await install(first, '1.0.0', sleeper('v1'));
    const before = pidOf(first) as number;
    await harness?.close();
    harness = undefined;
    await first.stop();
    expect(isAlive(before)).toBe(false);

    const second = newSupervisor();
    await second.start();
    const after = await until('the app started again', () => pidOf(second));
    expect(after).not.toBe(before);
    expect(second.status('my-app')?.spec.version).toBe('1.0.0');
    const again = await install(second, '1.0.0', sleeper('v1'));
    expect(steps(again)).toEqual(['job:started', 'manifest:started', 'manifest:skipped', 'job:succeeded']);
  });

  it('rolls back to the previous version when the new one exits at once', async () => {
    const supervisor = newSupervisor();
    await install(supervisor, '1.0.0', sleeper('v1'));
    const v1 = pidOf(supervisor) as number;
    const feedback = await install(supervisor, '2.0.0', quitter);
    expect(steps(feedback).slice(-7)).toEqual(['run:started', 'run:succeeded', 'healthCheck:started', 'healthCheck:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)).toMatchObject({ status: 'rolledBack', installedVersion: '1.0.0' });
    expect(feedback.at(-1)?.resultDetails).toMatch(/^HEALTH_CHECK_FAILED: my-app 2\.0\.0 exited \(code 3\)/);
    expect(readlinkSync(path.join(appsRoot(), 'my-app', 'current'))).toBe('1.0.0');
    expect(isAlive(v1)).toBe(false);
    const back = await until('v1 running again', () => pidOf(supervisor));
    expect(isAlive(back)).toBe(true);
    expect(supervisor.status('my-app')).toMatchObject({ spec: { version: '1.0.0' }, exits: 0 });
    expect(readFileSync(path.join(root, 'logs', 'my-app.log'), 'utf8')).toContain('cannot open config');
  });

  it('stops the app when the first version ever fails, since there is nothing to go back to', async () => {
    const supervisor = newSupervisor();
    const feedback = await install(supervisor, '1.0.0', quitter);
    expect(steps(feedback).at(-1)).toBe('job:rolledBack');
    expect(supervisor.status('my-app')).toBeUndefined();
    expect(() => readlinkSync(path.join(appsRoot(), 'my-app', 'current'))).toThrow();
  });

  it('waits for a health URL to answer, and fails the update when it never does', async () => {
    const supervisor = newSupervisor();
    const port = await freePort();
    const good = await install(supervisor, '1.0.0', server, { env: { PORT: String(port) }, healthCheck: { url: `http://127.0.0.1:${port}/healthz`, timeoutSeconds: 10 } }, [process.execPath, 'server.mjs']);
    expect(steps(good).at(-1)).toBe('job:succeeded');
    pidOf(supervisor);
    const bad = await install(supervisor, '2.0.0', server, { env: { PORT: String(port) }, healthCheck: { url: `http://127.0.0.1:${port}/nothing-here`, timeoutSeconds: 1 } }, [process.execPath, 'server.mjs']);
    expect(steps(bad).at(-1)).toBe('job:rolledBack');
    expect(bad.at(-1)?.resultDetails).toMatch(/^HEALTH_CHECK_TIMEOUT: my-app 2\.0\.0 did not answer its health check within 1 s \(last: HTTP 404\)/);
    expect(supervisor.status('my-app')?.spec.version).toBe('1.0.0');
    pidOf(supervisor);
  });

  it('refuses a working directory outside the allowed roots before installing anything', async () => {
    const supervisor = newSupervisor();
    const feedback = await install(supervisor, '1.0.0', sleeper('v1'), { workingDirectory: '/etc' });
    expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: step 0: edge-ota\/process:1 workingDirectory \/etc is outside the allowed roots/);
    expect(supervisor.status('my-app')).toBeUndefined();
  });
});
