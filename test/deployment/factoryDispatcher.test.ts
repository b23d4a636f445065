import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, eventually, freePort, makeUpdate, startHarness } from '../../cloud/dispatcher/test/support/harness.ts';
import type { Harness } from '../../cloud/dispatcher/test/support/harness.ts';
import { runFactory } from '../../deployment/src/factory.ts';
import type { FactoryOptions } from '../../deployment/src/factory.ts';
import { DispatcherClient } from '../../deployment/src/factoryDispatcher.ts';
import type { DispatcherDevice, WantedDevice } from '../../deployment/src/factoryDispatcher.ts';
import { ServiceIdentityStore, resolveHub } from '../../deployment/src/factoryIdentities.ts';
import type { IdentityDoc } from '../../deployment/src/factoryIdentities.ts';
import { CountingStore } from './support/countingIdentityStore.ts';

// The factory with the real dispatcher process on the emulator: devices are created through the device-manager
// API (which assigns the software and registers the identity under the parent), a rerun makes no API or registry
// write, and what the API cannot do (reassign, adopt an identity it did not create) stops the run before any write.

class CountingDispatcher extends DispatcherClient {
  readonly creates: string[] = [];
  override createDevice(wanted: WantedDevice): Promise<{ device: DispatcherDevice; created: boolean }> {
    this.creates.push(wanted.deviceId);
    return super.createDevice(wanted);
  }
}

describe('factory setup through the dispatcher', () => {
  let harness: Harness;
  let base: string;
  let work: string;

  const gatewayApp = 'Contoso/GatewayApp@1.0.0';
  const firmware = 'Contoso/McuFw@1.0.0';
  const topology = (mcuFirmware = firmware, extraMcus: Array<Record<string, unknown>> = []): Record<string, unknown> => ({
    gateways: [
      { id: 'd-top', layer: 0, software: gatewayApp },
      { id: 'd-line', layer: 1, parent: 'd-top', mcus: [{ id: 'd-mcu', port: '/dev/ttyACM0', firmware: mcuFirmware }, ...extraMcus] },
    ],
  });
  const writeTopology = (name: string, document: Record<string, unknown>): string => {
    const file = path.join(work, name);
    writeFileSync(file, JSON.stringify(document));
    return file;
  };
  const options = (topologyFile: string, extra: Partial<FactoryOptions> = {}): FactoryOptions => ({
    topology: topologyFile,
    hub: resolveHub(path.join(harness.hub.stateDir, 'hub.json')),
    dispatcher: base,
    outDir: path.join(work, 'out'),
    ...extra,
  });

  beforeAll(async () => {
    harness = await startHarness();
    work = mkdtempSync(path.join(tmpdir(), 'factory-dispatcher-'));
    const port = await freePort();
    await harness.startDispatcherProcess(path.join(work, 'dispatcher'), port);
    base = `http://127.0.0.1:${port}`;
    for (const [name, version] of [['GatewayApp', '1.0.0'], ['McuFw', '1.0.0'], ['McuFw', '2.0.0']] as const) {
      const imported = await api(base, 'POST', '/updates', makeUpdate(version, 1, 512, name));
      expect(imported.status, JSON.stringify(imported.body)).toBe(201);
    }
  }, 90_000);

  afterAll(async () => {
    await harness?.stop();
  });

  it('creates every device through the API with its assignment; the dispatcher registers the identities under their parents', async () => {
    const lines: string[] = [];
    const result = await runFactory({ ...options(writeTopology('topology.json', topology())), log: (l) => lines.push(l) });
    expect(lines.filter((l) => !l.includes(' file '))).toEqual([
      `created dispatcher d-top: assigned ${gatewayApp}`,
      'created identity d-top: edge gateway, top layer, registered by the dispatcher',
      'created dispatcher d-line: no update of its own',
      'created identity d-line: edge gateway under d-top, registered by the dispatcher',
      `created dispatcher d-mcu: assigned ${firmware}`,
      'created identity d-mcu: leaf device under d-line, registered by the dispatcher',
    ]);
    expect(result.counts.updated).toBe(0);

    const device = async (id: string): Promise<Record<string, unknown>> => (await api(base, 'GET', `/devices/${id}`)).body;
    expect(await device('d-top')).toMatchObject({ parentId: null, isGateway: true, assignedUpdateId: gatewayApp, assignedBy: 'device' });
    expect(await device('d-line')).toMatchObject({ parentId: 'd-top', isGateway: true });
    expect(await device('d-mcu')).toMatchObject({ parentId: 'd-line', isGateway: false, assignedUpdateId: firmware, assignedBy: 'device' });
    const top = (await harness.registry.get('d-top')).responseBody as IdentityDoc;
    const line = (await harness.registry.get('d-line')).responseBody as IdentityDoc;
    const mcu = (await harness.registry.get('d-mcu')).responseBody as IdentityDoc;
    expect(line).toMatchObject({ capabilities: { iotEdge: true }, parentScopes: [top.deviceScope] });
    expect(mcu).toMatchObject({ capabilities: { iotEdge: false }, deviceScope: line.deviceScope });
  });

  it('a second run makes no API create and no registry write', async () => {
    const etags = async (): Promise<unknown[]> => Promise.all(['d-top', 'd-line', 'd-mcu'].map(async (id) => ((await harness.registry.get(id)).responseBody as IdentityDoc).etag));
    const before = await etags();
    const dispatcher = new CountingDispatcher(base);
    const store = new CountingStore(new ServiceIdentityStore(harness.info.serviceConnectionString));
    const result = await runFactory(options(path.join(work, 'topology.json'), { dispatcher, identityStore: store }));
    expect(dispatcher.creates).toEqual([]);
    expect(store.writes).toEqual([]);
    expect(result.actions.filter((a) => a.action !== 'unchanged')).toEqual([]);
    expect(result.actions.filter((a) => a.kind === 'dispatcher').map((a) => `${a.subject}: ${a.detail}`)).toEqual([
      `d-top: assigned ${gatewayApp}`, 'd-line: no update of its own', `d-mcu: assigned ${firmware}`,
    ]);
    expect(await etags()).toEqual(before);
  });

  it('refuses to adopt an identity the dispatcher did not create, or to assign an update missing from the catalog, and then changes nothing', async () => {
    // Created in IoT Hub behind the dispatcher's back, without a parent: the dispatcher learns of it from the
    // lifecycle event and keeps a record with no parent, which the topology contradicts.
    await harness.registry.create({ deviceId: 'd-orphan', capabilities: { iotEdge: false } });
    await eventually(async () => ((await api(base, 'GET', '/devices/d-orphan')).status === 200 ? true : undefined), 20_000, 'the dispatcher to record d-orphan');
    const file = writeTopology('conflicts.json', topology('Contoso/McuFw@2.0.0', [
      { id: 'd-orphan', port: '/dev/ttyACM1' },
      { id: 'd-new', port: '/dev/ttyACM2', firmware: 'Contoso/McuFw@9.0.0' },
    ]));
    const dispatcher = new CountingDispatcher(base);
    const store = new CountingStore(new ServiceIdentityStore(harness.info.serviceConnectionString));
    const error = await runFactory(options(file, { dispatcher, identityStore: store, outDir: path.join(work, 'never') })).then(() => undefined, (e: unknown) => e as Error & { code: string });
    expect(error?.code).toBe('DISPATCHER_CONFLICT');
    expect(error?.message).toContain('d-orphan has parent (none) in the dispatcher, the topology says d-line');
    expect(error?.message).toContain('Contoso/McuFw@9.0.0 (for d-new) is not in the dispatcher\'s catalog');
    expect(dispatcher.creates).toEqual([]);
    expect(store.writes).toEqual([]);
    expect((await api(base, 'GET', '/devices/d-new')).status).toBe(404);
    // The reassignment the same topology asks for (d-mcu to 2.0.0) waited for the conflicts: nothing was changed.
    expect((await api(base, 'GET', '/devices/d-mcu')).body).toMatchObject({ assignedUpdateId: firmware });
  });

  it('reassigns a device whose software changed in the topology, and a rerun is unchanged again', async () => {
    const file = writeTopology('newer.json', topology('Contoso/McuFw@2.0.0'));
    const first = await runFactory(options(file));
    // The dispatcher record, and the gateway's summary that lists its MCUs' firmware.
    expect(first.actions.filter((a) => a.action !== 'unchanged').map((a) => `${a.action} ${a.kind} ${a.kind === 'file' ? path.basename(a.subject) : a.subject}: ${a.detail ?? ''}`)).toEqual([
      `updated dispatcher d-mcu: assigned Contoso/McuFw@2.0.0 (was ${firmware})`,
      'updated file gateway.json: ',
    ]);
    expect((await api(base, 'GET', '/devices/d-mcu')).body).toMatchObject({ assignedUpdateId: 'Contoso/McuFw@2.0.0', assignedBy: 'device' });
    const history = (await api(base, 'GET', '/devices/d-mcu/history')).body.history as Array<{ status: string }>;
    expect(history.some((h) => h.status === 'reassigned')).toBe(true);
    const again = await runFactory(options(file));
    expect(again.actions.filter((a) => a.action !== 'unchanged')).toEqual([]);
  });

  it('says plainly when the dispatcher is not there', async () => {
    const port = await freePort();
    await expect(runFactory(options(path.join(work, 'topology.json'), { dispatcher: `http://127.0.0.1:${port}` })))
      .rejects.toMatchObject({ code: 'DISPATCHER_UNAVAILABLE' });
  });
});
