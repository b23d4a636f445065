import iothub from 'azure-iothub';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { freePort } from '../support/freePort.ts';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { startHubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { startLocalEdge } from '../../deployment/src/localRunner.ts';
import type { LocalEdge, LocalModule } from '../../deployment/src/localRunner.ts';
import { localiseValue, mountsOf } from '../../deployment/src/localVolumes.ts';
import type { JsonObject } from '../../deployment/src/manifest.ts';
import { readTemplate } from '../../deployment/src/manifest.ts';
import { generateManifest } from '../../deployment/src/manifestCheck.ts';

const { Registry } = iothub;

// The local runner against a real emulator process: it must leave the emulator in the state a real gateway's
// edgeAgent would (identities, routes), start our modules with aziot-edged's environment, restart them as their
// restartPolicy says, and leave nothing running when stopped.

async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await Promise.resolve().then(check).catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A stand-in module: records each start and its environment in its state volume, exits as told, or stays up. */
const probeScript = `
const fs = require('fs'), p = require('path');
const dir = process.env.PROBE_STATE_DIR;
fs.mkdirSync(dir, { recursive: true });
const runsFile = p.join(dir, 'runs');
const run = (fs.existsSync(runsFile) ? Number(fs.readFileSync(runsFile, 'utf8')) : 0) + 1;
fs.writeFileSync(runsFile, String(run));
fs.writeFileSync(p.join(dir, 'env.json'), JSON.stringify(process.env));
if (run <= Number(process.env.PROBE_EXITS ?? 0)) process.exit(Number(process.env.PROBE_EXIT_CODE ?? 0));
if (process.env.PROBE_IGNORE_SIGTERM !== '1') process.on('SIGTERM', () => process.exit(0));
else process.on('SIGTERM', () => {});
fs.writeFileSync(p.join(dir, 'ready'), String(run));
setInterval(() => {}, 1000);
`;

function probe(restartPolicy: string, env: Record<string, string>): JsonObject {
  return {
    version: '1.0',
    type: 'docker',
    status: 'running',
    restartPolicy,
    settings: { image: 'localhost/probe:1', createOptions: JSON.stringify({ HostConfig: { Binds: [`${env.VOLUME}:/var/lib/probe`] } }) },
    env: Object.fromEntries(Object.entries({ PROBE_STATE_DIR: '/var/lib/probe', ...env }).filter(([k]) => k !== 'VOLUME').map(([k, v]) => [k, { value: v }])),
  };
}

function runs(stateDir: string, volume: string): number {
  const file = path.join(stateDir, 'volumes', volume, 'runs');
  return existsSync(file) ? Number(readFileSync(file, 'utf8')) : 0;
}

describe('createOptions mapped to local paths', () => {
  it('maps named volumes, host paths and module URLs', () => {
    const mounts = mountsOf(
      { HostConfig: { Binds: ['cacheState:/var/lib/cache', '/etc/ca.pem:/etc/edge-ota/ca.pem:ro'], Mounts: [{ Type: 'bind', Source: '/media/usb', Target: '/mnt/usb' }, { Type: 'bind', Source: '/dev', Target: '/dev' }] } },
      '/s',
    );
    expect(mounts).toEqual([
      { target: '/var/lib/cache', local: '/s/volumes/cacheState', file: false },
      { target: '/etc/edge-ota/ca.pem', local: '/s/host/etc/ca.pem', file: true },
      { target: '/mnt/usb', local: '/s/host/media/usb', file: false },
    ]);
    expect(localiseValue('/var/lib/cache', mounts, [], '127.0.0.1')).toBe('/s/volumes/cacheState');
    expect(localiseValue('/var/lib/cache/files:/mnt/usb', mounts, [], '127.0.0.1')).toBe('/s/volumes/cacheState/files:/s/host/media/usb');
    expect(localiseValue('/var/lib/cachex', mounts, [], '127.0.0.1')).toBe('/var/lib/cachex');
    expect(localiseValue('/dev/serial/by-id/usb-mcu-if00', mounts, [], '127.0.0.1')).toBe('/dev/serial/by-id/usb-mcu-if00');
    expect(localiseValue('http://contentCache:8080', mounts, ['contentCache'], '127.0.0.1')).toBe('http://127.0.0.1:8080');
    expect(localiseValue('http://contentCacheTwo:8080', mounts, ['contentCache'], '127.0.0.1')).toBe('http://contentCacheTwo:8080');
  });
});

describe('local runner input', () => {
  it('refuses a manifest that IoT Hub\'s tooling would refuse, before it touches the hub', async () => {
    const { manifest } = generateManifest({ platform: 'amd64', registry: 'localhost:5000' });
    const agent = ((manifest.modulesContent as JsonObject).$edgeAgent as JsonObject)['properties.desired'] as { modules: Record<string, JsonObject> };
    agent.modules.contentCache!.restartPolicy = 'sometimes';
    const unreachable = { hostName: '127.0.0.1', serviceConnectionString: 'HostName=127.0.0.1;SharedAccessKeyName=x;SharedAccessKey=eA==', caFile: '/nonexistent', workloadUri: 'unix:///nonexistent/{deviceId}.sock' };
    await expect(startLocalEdge({ hubInfo: unreachable, deviceId: 'gw', manifest, stateDir: mkdtempSync(path.join(tmpdir(), 'edge-')), log: () => {} })).rejects.toThrow(/not valid[\s\S]*restartPolicy/);
  });
});

describe('local runner against the hub emulator', () => {
  let hub: HubProcess;
  const edges: LocalEdge[] = [];

  beforeAll(async () => {
    hub = await startHubProcess({ caDir: process.env.EDGE_OTA_TEST_CA_DIR });
  });

  afterAll(async () => {
    await Promise.allSettled(edges.map((edge) => edge.stop()));
    await hub?.stop();
  });

  it('applies the generated manifest and runs contentCache and otaOrchestrator with aziot-edged\'s environment', async () => {
    const stateDir = mkdtempSync(path.join(tmpdir(), 'edge-'));
    const port = await freePort();
    const { manifest } = generateManifest({ platform: 'amd64', registry: 'localhost:5000' });
    const edge = await startLocalEdge({
      hubInfo: hub.info,
      deviceId: 'gw-runner',
      manifest,
      stateDir,
      createDevice: true,
      modules: ['contentCache', 'otaOrchestrator'],
      envOverrides: { contentCache: { CACHE_PORT: String(port), CACHE_BIND_ADDRESS: '127.0.0.1' }, otaOrchestrator: { OTA_CONTENT_CACHE_URL: `http://127.0.0.1:${port}` } },
      stopGraceMs: 10_000,
      log: () => {},
    });
    edges.push(edge);
    expect([...edge.modules.keys()].sort()).toEqual(['contentCache', 'otaOrchestrator']);
    expect(edge.skipped.get('serialTranslator')).toBe('not selected');

    const cache = edge.modules.get('contentCache')!;
    const health = await eventually(async () => {
      const response = await fetch(`http://127.0.0.1:${port}/healthz`);
      return response.ok ? await response.json() : undefined;
    }, 'contentCache /healthz');
    expect(health).toEqual({ ok: true });
    const registry = Registry.fromConnectionString(hub.info.serviceConnectionString);
    const identity = (await registry.getModule('gw-runner', 'contentCache')).responseBody;
    expect(cache.environment).toMatchObject({
      IOTEDGE_DEVICEID: 'gw-runner',
      IOTEDGE_MODULEID: 'contentCache',
      IOTEDGE_IOTHUBHOSTNAME: hub.info.hostName,
      IOTEDGE_GATEWAYHOSTNAME: hub.info.hostName,
      IOTEDGE_AUTHSCHEME: 'sasToken',
      IOTEDGE_APIVERSION: '2019-01-30',
      IOTEDGE_WORKLOADURI: hub.info.workloadUri.replace('{deviceId}', 'gw-runner'),
      IOTEDGE_MODULEGENERATIONID: identity.generationId,
      CACHE_STATE_DIR: path.join(stateDir, 'volumes', 'edgeOtaContentCache'),
      CACHE_IMPORT_ROOTS: path.join(stateDir, 'host', 'media', 'edge-ota-usb'),
    });
    expect(cache.environment.NODE_EXTRA_CA_CERTS, 'a module trusts the hub through the workload API only').toBeUndefined();
    await eventually(() => (existsSync(path.join(stateDir, 'volumes', 'edgeOtaContentCache', 'index.sqlite')) ? true : undefined), 'the cache index on its volume');

    // The orchestrator connects with ModuleClient.fromEnvironment: this only works with a correct environment.
    const orchestrator = edge.modules.get('otaOrchestrator')!;
    await eventually(() => (orchestrator.output.includes('otaOrchestrator ready on gw-runner') ? true : undefined), `the orchestrator ready line; output: ${orchestrator.output}`, 30_000);
    expect(orchestrator.environment.OTA_STATE_DIR).toBe(path.join(stateDir, 'volumes', 'edgeOtaOrchestrator'));

    // The routes are in $edgeHub's twin, where the emulator's edgeHub reads them.
    const hubTwin = (await registry.getModuleTwin('gw-runner', '$edgeHub')).responseBody as unknown as { properties: { desired: { routes: Record<string, { route: string }> } } };
    expect(Object.values(hubTwin.properties.desired.routes).map((r) => r.route)).toContain("FROM /messages/* WHERE $connectionModuleId = 'otaOrchestrator' INTO $upstream");

    const pids = [...edge.modules.values()].map((m) => m.pid!);
    await edge.stop();
    for (const module of edge.modules.values()) {
      expect(module.state).toBe('stopped');
      expect(module.exits.at(-1), `${module.moduleId} exits cleanly on SIGTERM`).toMatchObject({ code: 0 });
    }
    for (const pid of pids) expect(alive(pid)).toBe(false);
  }, 90_000);

  it('restarts modules as their restartPolicy says, with backoff, and kills what ignores SIGTERM', async () => {
    const stateDir = mkdtempSync(path.join(tmpdir(), 'edge-'));
    const template = readTemplate(false);
    const agent = ((template.modulesContent as JsonObject).$edgeAgent as JsonObject)['properties.desired'] as { modules: Record<string, JsonObject> };
    // Only probes: the template's own modules are not what this test is about.
    agent.modules = {
      failing: probe('on-failure', { VOLUME: 'failing', PROBE_EXITS: '2', PROBE_EXIT_CODE: '3' }),
      cleanExit: probe('on-failure', { VOLUME: 'cleanExit', PROBE_EXITS: '1', PROBE_EXIT_CODE: '0' }),
      always: probe('always', { VOLUME: 'always', PROBE_EXITS: '1', PROBE_EXIT_CODE: '0' }),
      unhealthy: probe('on-unhealthy', { VOLUME: 'unhealthy', PROBE_EXITS: '1', PROBE_EXIT_CODE: '1' }),
      never: probe('never', { VOLUME: 'never', PROBE_EXITS: '1', PROBE_EXIT_CODE: '4' }),
      stubborn: probe('always', { VOLUME: 'stubborn', PROBE_IGNORE_SIGTERM: '1' }),
    };
    const started = Date.now();
    const edge = await startLocalEdge({
      hubInfo: hub.info,
      deviceId: 'gw-restarts',
      manifest: template,
      stateDir,
      createDevice: true,
      moduleCommand: () => ({ command: process.execPath, args: ['-e', probeScript] }),
      backoff: { initialMs: 200, maxMs: 400, resetAfterMs: 60_000 },
      stopGraceMs: 1_000,
      log: () => {},
    });
    edges.push(edge);
    const module = (id: string): LocalModule => edge.modules.get(id)!;
    await eventually(() => (runs(stateDir, 'failing') === 3 && module('failing').state === 'running' ? true : undefined), 'failing restarted twice');
    await eventually(() => (runs(stateDir, 'always') === 2 && module('always').state === 'running' ? true : undefined), 'always restarted after a clean exit');
    await eventually(() => (runs(stateDir, 'unhealthy') === 2 && module('unhealthy').state === 'running' ? true : undefined), 'on-unhealthy restarted after a crash');
    await eventually(() => (module('cleanExit').state === 'exited' && module('never').state === 'exited' ? true : undefined), 'the others left down');
    // Backoff: 200 ms, then 400 ms before the third run of `failing`.
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
    expect(module('failing').exits.map((e) => e.code)).toEqual([3, 3]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(runs(stateDir, 'cleanExit')).toBe(1);
    expect(runs(stateDir, 'never')).toBe(1);
    expect(module('never').exits).toMatchObject([{ code: 4 }]);

    // Each probe saw its own identity and its volume mapped into the state dir.
    const env = JSON.parse(readFileSync(path.join(stateDir, 'volumes', 'failing', 'env.json'), 'utf8')) as Record<string, string>;
    expect(env).toMatchObject({ IOTEDGE_MODULEID: 'failing', IOTEDGE_DEVICEID: 'gw-restarts', PROBE_STATE_DIR: path.join(stateDir, 'volumes', 'failing') });

    // The probes that stay up must have installed their SIGTERM handlers before they are stopped.
    const ready = (volume: string): number => Number(existsSync(path.join(stateDir, 'volumes', volume, 'ready')) ? readFileSync(path.join(stateDir, 'volumes', volume, 'ready'), 'utf8') : 0);
    await eventually(() => (ready('stubborn') === 1 && ready('always') === 2 && ready('failing') === 3 && ready('unhealthy') === 2 ? true : undefined), 'the probes that stay up ready');
    const pids = [...edge.modules.values()].map((m) => m.pid).filter((pid): pid is number => pid !== undefined);
    expect(pids.length).toBe(4);
    const stopStarted = Date.now();
    await edge.stop();
    expect(Date.now() - stopStarted, 'one grace period for all modules').toBeLessThan(5_000);
    expect(module('stubborn').exits.at(-1)).toMatchObject({ signal: 'SIGKILL' });
    expect(module('always').exits.at(-1)).toMatchObject({ code: 0 });
    for (const pid of pids) expect(alive(pid)).toBe(false);
    // Nothing restarts after stop.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(runs(stateDir, 'failing')).toBe(3);
    expect([...edge.modules.values()].every((m) => m.state === 'stopped' || m.state === 'exited')).toBe(true);
  }, 60_000);
});
