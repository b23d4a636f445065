import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { startHubProcess } from '../../cloud/hubEmulator/src/index.ts';
import type { JsonObject } from '../../deployment/src/manifest.ts';
import { repositoryRoot } from '../../deployment/src/manifest.ts';
import { createDeploymentValidator } from '../../deployment/src/schemas.ts';
import { runCommand } from '../support/runCommand.ts';
import type { CommandRun } from '../support/runCommand.ts';

// The two commands as a user runs them (`npm run deployment`, `npm run edge`), as processes.

function run(script: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 30_000): Promise<CommandRun> {
  return runCommand(process.execPath, ['--import', 'tsx', '--conditions=source', path.join(repositoryRoot, script), ...args], { cwd: repositoryRoot, env, timeoutMs });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('npm run deployment', () => {
  it('writes a validated manifest for the platform and registry asked for', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'manifests-'));
    const result = await run('deployment/src/generate.ts', ['--platform', 'arm64v8', '--registry', 'registry.example:5000', '--nested-parent', '--out', out]);
    expect(result.code, result.stderr).toBe(0);
    const file = path.join(out, 'deployment.child.arm64v8.json');
    expect(result.stdout.trim()).toBe(file);
    const manifest = JSON.parse(readFileSync(file, 'utf8')) as JsonObject;
    expect(createDeploymentValidator().check('deployment', manifest)).toEqual([]);
    expect(JSON.stringify(manifest)).toContain('"$upstream:443/otaorchestrator:0.1.0-arm64v8"');
  });

  it('refuses an unknown platform and writes nothing', async () => {
    const out = mkdtempSync(path.join(tmpdir(), 'manifests-'));
    const result = await run('deployment/src/generate.ts', ['--platform', 'x86', '--out', out]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/--platform must be one of amd64, arm64v8/);
    expect(readdirSync(out)).toEqual([]);
  });
});

describe('npm run edge', () => {
  let hub: HubProcess;

  beforeAll(async () => {
    hub = await startHubProcess({ caDir: process.env.EDGE_OTA_TEST_CA_DIR });
  });

  afterAll(async () => {
    await hub?.stop();
  });

  it('runs the gateway\'s modules until SIGTERM, trusting the emulator without being told, and leaves nothing running', async () => {
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as { port: number }).port;
    await new Promise((resolve) => server.close(resolve));
    const stateDir = mkdtempSync(path.join(tmpdir(), 'edge-cli-'));
    // Without NODE_EXTRA_CA_CERTS, as from a fresh shell: the runner must arrange the CA for the service SDK itself.
    const { NODE_EXTRA_CA_CERTS: _ca, ...env } = process.env;
    const args = ['--hub', path.join(hub.stateDir, 'hub.json'), '--device', 'gw-cli', '--create-device', '--state-dir', stateDir,
      '--modules', 'contentCache', '--env', `contentCache.CACHE_PORT=${port}`, '--env', 'contentCache.CACHE_BIND_ADDRESS=127.0.0.1'];
    const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', path.join(repositoryRoot, 'deployment/src/edgeMain.ts'), ...args], { cwd: repositoryRoot, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 30_000;
      let healthy = false;
      while (!healthy && Date.now() < deadline) {
        healthy = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
        if (!healthy) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(healthy, `${stdout}\n${stderr}`).toBe(true);
      const ready = /edge gw-cli ready: contentCache \(pid (\d+)\)/.exec(stdout);
      expect(ready, stdout).not.toBeNull();
      expect(stdout).toContain('not run: otaOrchestrator: not selected');
      const modulePid = Number(ready![1]);
      expect(existsSync(path.join(stateDir, 'volumes', 'edgeOtaContentCache', 'index.sqlite'))).toBe(true);

      child.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 20_000))]);
      expect(code).toBe(0);
      expect(alive(modulePid)).toBe(false);
      expect(await fetch(`http://127.0.0.1:${port}/healthz`).then(() => 'answered', () => 'refused')).toBe('refused');
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);
});
