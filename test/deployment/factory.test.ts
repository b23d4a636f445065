import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import iothub from 'azure-iothub';
import iotDevice from 'azure-iot-device';
import iotDeviceMqtt from 'azure-iot-device-mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { startHubProcess } from '../../cloud/hubEmulator/src/index.ts';
import { runFactory } from '../../deployment/src/factory.ts';
import type { FactoryResult } from '../../deployment/src/factory.ts';
import { ServiceIdentityStore, resolveHub } from '../../deployment/src/factoryIdentities.ts';
import type { FactoryError } from '../../deployment/src/factoryTopology.ts';
import { repositoryRoot } from '../../deployment/src/manifest.ts';
import { runCommand } from '../support/runCommand.ts';
import type { CommandRun } from '../support/runCommand.ts';
import type { IdentityDoc } from '../../deployment/src/factoryIdentities.ts';
import { CountingStore } from './support/countingIdentityStore.ts';

const { Registry } = iothub;
const { Client: DeviceClient } = iotDevice;
const { Mqtt } = iotDeviceMqtt;

// The factory against a real emulator process through the unmodified service SDK: identities with the right
// edge capability and scopes, per-gateway folders, and a second run that writes nothing (no registry write, no
// etag or generation change, no file touched).

function npmRunFactory(args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<CommandRun> {
  return runCommand('npm', ['run', '--silent', '--prefix', repositoryRoot, 'factory', '--', ...args], { cwd, env, timeoutMs: 60_000 });
}

const lastJson = (stdout: string): Record<string, unknown> => JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;

function snapshotFiles(dir: string, names: string[]): Record<string, number> {
  return Object.fromEntries(names.map((n) => [n, statSync(path.join(dir, n)).mtimeMs]));
}

describe('factory setup on the emulator', () => {
  let hub: HubProcess;
  let registry: InstanceType<typeof Registry>;
  let work: string;
  let topologyFile: string;
  let bundleFile: string;
  let bundleSha256: string;
  let out: string;

  const topology = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
    hostnameDomain: 'plant.example',
    gateways: [
      { id: 'plant-top', layer: 0, software: 'contoso/gateway-app@1.0.0', firstBootBundle: 'first-boot.otabundle', firstBootBundleSha256: bundleSha256, ...extra },
      { id: 'line-1', layer: 1, parent: 'plant-top', mcus: [
        { id: 'line-1-mcu-a', port: '/dev/ttyACM0', firmware: 'contoso/mcu-fw@1.0.0' },
        { id: 'line-1-mcu-b', port: '/dev/ttyACM1', firmware: 'contoso/mcu-fw@1.0.0' },
      ] },
      { id: 'cell-3', layer: 2, parent: 'line-1', mcus: [{ id: 'cell-3-mcu', port: 'tcp://127.0.0.1:4000' }] },
    ],
  });
  const allIds = ['plant-top', 'line-1', 'cell-3', 'line-1-mcu-a', 'line-1-mcu-b', 'cell-3-mcu'];
  const identity = async (id: string): Promise<IdentityDoc> => (await registry.get(id)).responseBody;
  const identities = async (): Promise<Record<string, { etag?: string; generationId?: string }>> =>
    Object.fromEntries(await Promise.all(allIds.map(async (id) => {
      const doc = await identity(id);
      return [id, { etag: doc.etag, generationId: doc.generationId }] as const;
    })));

  beforeAll(async () => {
    hub = await startHubProcess({ caDir: process.env.EDGE_OTA_TEST_CA_DIR });
    registry = Registry.fromConnectionString(hub.info.serviceConnectionString);
    work = mkdtempSync(path.join(tmpdir(), 'factory-'));
    bundleFile = path.join(work, 'first-boot.otabundle');
    const bytes = Buffer.from('not a real bundle, the factory copies it byte for byte\n'.repeat(1000));
    writeFileSync(bundleFile, bytes);
    bundleSha256 = createHash('sha256').update(bytes).digest('hex');
    topologyFile = path.join(work, 'topology.json');
    writeFileSync(topologyFile, JSON.stringify(topology()));
    out = path.join(work, 'out');
  });

  afterAll(async () => {
    await hub?.stop();
  });

  let first: FactoryResult;

  it('creates gateways as edge devices under their parents, MCUs as leaves of their gateway, and a folder per gateway', async () => {
    const lines: string[] = [];
    first = await runFactory({ topology: topologyFile, hub: resolveHub(path.join(hub.stateDir, 'hub.json')), outDir: out, log: (l) => lines.push(l) });

    const top = await identity('plant-top');
    const line1 = await identity('line-1');
    const cell3 = await identity('cell-3');
    expect(top.capabilities?.iotEdge).toBe(true);
    expect(top.parentScopes ?? []).toEqual([]);
    expect(line1.capabilities?.iotEdge).toBe(true);
    expect(line1.parentScopes).toEqual([top.deviceScope]);
    expect(cell3.parentScopes).toEqual([line1.deviceScope]);
    for (const [mcu, gateway] of [['line-1-mcu-a', line1], ['line-1-mcu-b', line1], ['cell-3-mcu', cell3]] as const) {
      const doc = await identity(mcu);
      expect(doc.capabilities?.iotEdge, mcu).toBe(false);
      expect(doc.deviceScope, mcu).toBe(gateway.deviceScope);
    }

    expect(lines.filter((l) => l.startsWith('note: '))).toEqual([
      'note: first-boot bundles are copied without checking their signature: pass --trust <root>.root.pub.json to check them here',
      'note: without --dispatcher the software and firmware of the topology are only written to gateway.json, not assigned',
    ]);
    expect(lines.filter((l) => !l.startsWith('note: ')).slice(0, 6)).toEqual([
      'created identity plant-top: edge gateway, top layer',
      'created identity line-1: edge gateway under plant-top',
      'created identity cell-3: edge gateway under line-1',
      'created identity line-1-mcu-a: leaf device under line-1',
      'created identity line-1-mcu-b: leaf device under line-1',
      'created identity cell-3-mcu: leaf device under cell-3',
    ]);
    expect(first.counts).toEqual({ created: first.actions.length, updated: 0, unchanged: 0, removed: 0 });

    const dir = path.join(out, 'line-1');
    const config = readFileSync(path.join(dir, 'config.toml'), 'utf8');
    expect(config).toContain('hostname = "line-1.plant.example"');
    expect(config).toContain('parent_hostname = "plant-top.plant.example"');
    expect(config).toContain(`iothub_hostname = "${hub.info.hostName}"`);
    expect(config).toContain('device_id = "line-1"');
    expect(config).toContain('trust_bundle_cert = "file:///var/aziot/certs/edge-ota-trust-bundle.pem"');
    expect(config).toContain('image = "$upstream:443/azureiotedge-agent:1.6"');
    expect(readFileSync(path.join(out, 'plant-top', 'config.toml'), 'utf8')).not.toContain('parent_hostname');
    const key = line1.authentication!.symmetricKey!.primaryKey!;
    expect(readFileSync(path.join(dir, 'connection-string.txt'), 'utf8').trim()).toBe(`HostName=${hub.info.hostName};DeviceId=line-1;SharedAccessKey=${key}`);
    expect(readFileSync(path.join(dir, 'device-id.key')).toString('base64')).toBe(key);
    expect(readFileSync(path.join(dir, 'trust-bundle.pem'), 'utf8')).toBe(readFileSync(hub.info.caFile, 'utf8'));
    for (const secret of ['connection-string.txt', 'device-id.key', 'mcu-keys.json']) expect(statSync(path.join(dir, secret)).mode & 0o777, secret).toBe(0o600);
    expect(statSync(path.join(dir, 'config.toml')).mode & 0o777).toBe(0o644);
    expect(JSON.parse(readFileSync(path.join(dir, 'mcu-keys.json'), 'utf8'))).toEqual({
      'line-1-mcu-a': (await identity('line-1-mcu-a')).authentication!.symmetricKey!.primaryKey,
      'line-1-mcu-b': (await identity('line-1-mcu-b')).authentication!.symmetricKey!.primaryKey,
    });
    const summary = JSON.parse(readFileSync(path.join(dir, 'gateway.json'), 'utf8')) as Record<string, unknown>;
    expect(summary).toMatchObject({
      id: 'line-1', parent: 'plant-top', layer: 1,
      mcus: [{ id: 'line-1-mcu-a', port: '/dev/ttyACM0', firmware: 'contoso/mcu-fw@1.0.0' }, { id: 'line-1-mcu-b', port: '/dev/ttyACM1', firmware: 'contoso/mcu-fw@1.0.0' }],
      serialMcus: { 'line-1-mcu-a': { port: '/dev/ttyACM0' }, 'line-1-mcu-b': { port: '/dev/ttyACM1' } },
    });
    expect(existsSync(path.join(dir, 'first-boot.otabundle'))).toBe(false);
    const copied = readFileSync(path.join(out, 'plant-top', 'first-boot.otabundle'));
    expect(createHash('sha256').update(copied).digest('hex')).toBe(bundleSha256);
    expect(JSON.parse(readFileSync(path.join(out, 'plant-top', 'gateway.json'), 'utf8'))).toMatchObject({
      firstBootBundle: { file: 'first-boot.otabundle', sha256: bundleSha256, installAs: '/media/edge-ota-usb/first-boot.otabundle', verified: false },
    });
  });

  it('a second run writes nothing: no registry write, etags and generations as they were, every file untouched', async () => {
    const before = await identities();
    const files = ['config.toml', 'connection-string.txt', 'device-id.key', 'trust-bundle.pem', 'mcu-keys.json', 'gateway.json'];
    const mtimes = snapshotFiles(path.join(out, 'line-1'), files);
    const bundleMtime = statSync(path.join(out, 'plant-top', 'first-boot.otabundle')).mtimeMs;
    await new Promise((resolve) => setTimeout(resolve, 20)); // so that a rewrite would show in mtime
    const store = new CountingStore(new ServiceIdentityStore(hub.info.serviceConnectionString));
    const again = await runFactory({ topology: topologyFile, hub: resolveHub(path.join(hub.stateDir, 'hub.json')), outDir: out, identityStore: store });
    expect(store.writes).toEqual([]);
    expect(again.actions.map((a) => a.action).every((a) => a === 'unchanged')).toBe(true);
    expect(again.actions.length).toBe(first.actions.length);
    expect(await identities()).toEqual(before);
    expect(snapshotFiles(path.join(out, 'line-1'), files)).toEqual(mtimes);
    expect(statSync(path.join(out, 'plant-top', 'first-boot.otabundle')).mtimeMs).toBe(bundleMtime);
  });

  it('fixes a wrong parent scope, capability or status, keeps the keys, says what changed, and removes files no longer wanted', async () => {
    const top = await identity('plant-top');
    const line1 = await identity('line-1');
    const cell3 = await identity('cell-3');
    // line-1 loses its parent, an MCU is moved under the wrong gateway and disabled.
    await registry.update({ deviceId: 'line-1', capabilities: { iotEdge: true }, deviceScope: line1.deviceScope, parentScopes: [], authentication: line1.authentication });
    const mcu = await identity('cell-3-mcu');
    await registry.update({ deviceId: 'cell-3-mcu', capabilities: { iotEdge: false }, deviceScope: line1.deviceScope, status: 'disabled', authentication: mcu.authentication });
    writeFileSync(topologyFile, JSON.stringify({ ...topology(), gateways: (topology().gateways as Array<Record<string, unknown>>).map((g) => (g.id === 'plant-top' ? { id: 'plant-top', layer: 0 } : g)) }));

    const store = new CountingStore(new ServiceIdentityStore(hub.info.serviceConnectionString));
    const result = await runFactory({ topology: topologyFile, hub: resolveHub(path.join(hub.stateDir, 'hub.json')), outDir: out, identityStore: store });
    expect(store.writes).toEqual(['update line-1', 'update cell-3-mcu']);
    const changed = result.actions.filter((a) => a.action !== 'unchanged');
    expect(changed).toEqual([
      { action: 'updated', kind: 'identity', subject: 'line-1', detail: `parentScopes [] -> ["${top.deviceScope}"]` },
      { action: 'updated', kind: 'identity', subject: 'cell-3-mcu', detail: `deviceScope "${line1.deviceScope}" -> "${cell3.deviceScope}", status disabled -> enabled` },
      { action: 'removed', kind: 'file', subject: path.join(out, 'plant-top', 'first-boot.otabundle') },
      { action: 'updated', kind: 'file', subject: path.join(out, 'plant-top', 'gateway.json') },
    ]);
    expect((await identity('line-1')).parentScopes).toEqual([top.deviceScope]);
    expect((await identity('line-1')).authentication?.symmetricKey?.primaryKey).toBe(line1.authentication?.symmetricKey?.primaryKey);
    expect((await identity('cell-3-mcu'))).toMatchObject({ deviceScope: cell3.deviceScope, status: 'enabled' });

    const third = await runFactory({ topology: topologyFile, hub: resolveHub(path.join(hub.stateDir, 'hub.json')), outDir: out });
    expect(third.counts.unchanged).toBe(third.actions.length);
    writeFileSync(topologyFile, JSON.stringify(topology()));
  });

  it('refuses a first-boot bundle whose sha256 is not the expected one before writing anything', async () => {
    const file = path.join(work, 'wrong-hash.json');
    writeFileSync(file, JSON.stringify({ gateways: [{ id: 'plant-2', layer: 0, firstBootBundle: 'first-boot.otabundle', firstBootBundleSha256: 'f'.repeat(64) }] }));
    const store = new CountingStore(new ServiceIdentityStore(hub.info.serviceConnectionString));
    await expect(runFactory({ topology: file, hub: resolveHub(path.join(hub.stateDir, 'hub.json')), outDir: path.join(work, 'never'), identityStore: store }))
      .rejects.toThrow(expect.objectContaining({ code: 'BUNDLE_HASH_MISMATCH' }) as FactoryError);
    expect(store.writes).toEqual([]);
    expect(existsSync(path.join(work, 'never'))).toBe(false);
    await expect(registry.get('plant-2')).rejects.toThrow();
  });

  it('takes a service connection string as for Azure IoT Hub: same identities, no trust bundle unless given', async () => {
    const cliOut = path.join(work, 'cs-out');
    const hubTarget = resolveHub(hub.info.serviceConnectionString);
    expect(hubTarget).toEqual({ hostName: hub.info.hostName, serviceConnectionString: hub.info.serviceConnectionString });
    const result = await runFactory({ topology: topologyFile, hub: hubTarget, outDir: cliOut });
    expect(result.actions.filter((a) => a.kind === 'identity').every((a) => a.action === 'unchanged')).toBe(true);
    expect(existsSync(path.join(cliOut, 'line-1', 'trust-bundle.pem'))).toBe(false);
    expect(readFileSync(path.join(cliOut, 'line-1', 'config.toml'), 'utf8')).not.toContain('trust_bundle_cert');
    expect(() => resolveHub(`HostName=${hub.info.hostName};DeviceId=line-1;SharedAccessKey=abc=`)).toThrow(expect.objectContaining({ code: 'HUB_INVALID' }) as Error);
    expect(() => resolveHub(path.join(work, 'no-hub.json'))).toThrow(expect.objectContaining({ code: 'HUB_INVALID' }) as Error);
  });

  it('a child gateway connects to the hub with the connection string from its folder', async () => {
    const client = DeviceClient.fromConnectionString(readFileSync(path.join(out, 'cell-3', 'connection-string.txt'), 'utf8').trim(), Mqtt);
    await client.setOptions({ ca: readFileSync(path.join(out, 'cell-3', 'trust-bundle.pem'), 'utf8') });
    await client.open();
    try {
      const twin = await client.getTwin();
      expect(twin.properties.desired.$version).toBeTypeOf('number');
    } finally {
      await client.close();
    }
  });

  it('an MCU connects through its gateway with the key from mcu-keys.json, as the serial translator does', async () => {
    const keys = JSON.parse(readFileSync(path.join(out, 'line-1', 'mcu-keys.json'), 'utf8')) as Record<string, string>;
    const client = DeviceClient.fromConnectionString(`HostName=${hub.info.hostName};DeviceId=line-1-mcu-b;SharedAccessKey=${keys['line-1-mcu-b']};GatewayHostName=${hub.info.hostName}`, Mqtt);
    await client.setOptions({ ca: readFileSync(path.join(out, 'line-1', 'trust-bundle.pem'), 'utf8') });
    await client.open();
    try {
      await client.sendEvent(new iotDevice.Message('{"hello":"from line-1-mcu-b"}'));
    } finally {
      await client.close();
    }
  });

  it('`npm run factory` as a user runs it: no CA in the environment, paths relative to the shell, --json last', async () => {
    const { NODE_EXTRA_CA_CERTS: _ca, INIT_CWD: _init, ...env } = process.env;
    const cliOut = path.join(work, 'cli-out');
    const run = await npmRunFactory(['--topology', 'topology.json', '--hub', path.join(hub.stateDir, 'hub.json'), '--out', 'cli-out', '--json'], env, work);
    expect(run.code, run.stderr).toBe(0);
    const summary = lastJson(run.stdout);
    expect(summary).toMatchObject({ ok: true, outDir: cliOut, gateways: ['plant-top', 'line-1', 'cell-3'], counts: { updated: 0, removed: 0 } });
    // The identities exist already: only the new folder is created.
    expect(run.stdout).toContain('unchanged identity line-1: edge gateway under plant-top');
    expect(run.stdout).toContain('created file cli-out/line-1/config.toml');
    expect(run.stdout).toMatch(/^factory: 3 gateway\(s\), 3 MCU\(s\) -> .*cli-out: \d+ created, 0 updated, 6 unchanged, 0 removed$/m);

    const again = await npmRunFactory(['--topology', 'topology.json', '--hub', path.join(hub.stateDir, 'hub.json'), '--out', 'cli-out', '--json'], env, work);
    expect(again.code, again.stderr).toBe(0);
    const counts = lastJson(again.stdout).counts as Record<string, number>;
    expect(counts).toMatchObject({ created: 0, updated: 0, removed: 0 });
  }, 120_000);

  it('`npm run factory` with a bad topology exits 2 with a stable code and the JSON path, and writes nothing', async () => {
    const file = path.join(work, 'bad.json');
    writeFileSync(file, JSON.stringify({ gateways: [{ id: 'plant-top', layer: 0 }, { id: 'line-9', layer: 1, parent: 'plant-tpo' }] }));
    const { NODE_EXTRA_CA_CERTS: _ca, ...env } = process.env;
    const run = await npmRunFactory(['--topology', file, '--hub', path.join(hub.stateDir, 'hub.json'), '--out', path.join(work, 'bad-out'), '--json'], env, work);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('factory: TOPOLOGY_PARENT_UNKNOWN: /gateways/1/parent: "plant-tpo" is not a gateway of this topology');
    expect(lastJson(run.stdout)).toEqual({ ok: false, error: { code: 'TOPOLOGY_PARENT_UNKNOWN', path: '/gateways/1/parent', message: expect.any(String) as string } });
    expect(existsSync(path.join(work, 'bad-out'))).toBe(false);
    await expect(registry.get('line-9')).rejects.toThrow();

    const usage = await npmRunFactory(['--hub', path.join(hub.stateDir, 'hub.json')], env, work);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('factory: USAGE: --topology is required');
  }, 120_000);
});
