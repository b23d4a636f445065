import { readFileSync } from 'node:fs';
import iotDevice from 'azure-iot-device';
import iotDeviceMqtt from 'azure-iot-device-mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dispatcher } from '../src/app.ts';
import type { Harness, JsonLineProcess } from './support/harness.ts';
import { api, eventually, makeUpdate, startHarness, startDispatcher } from './support/harness.ts';

const { Client: DeviceClient, Message } = iotDevice;
const { Mqtt } = iotDeviceMqtt;

// The flow users asked for, end to end on the emulator with the real SDKs: a device created through the API is
// registered under its gateway, the lifecycle event reaches the dispatcher over the Event Hubs-compatible
// endpoint, the signed manifest reaches {gateway}/otaOrchestrator (a stand-in module), its feedback comes back as
// telemetry, and the API shows the device succeeded, with its history.

interface DeviceView {
  lifecycle: string;
  installedVersion: string | null;
  assignedUpdateId: string | null;
  currentJob: { jobId: string; state: string; step?: string; delivery?: { twinWritten: boolean; attempts: number } } | null;
}

describe('dispatcher on the emulator (Event Hubs ingestion)', () => {
  let harness: Harness;
  let dispatcher: Dispatcher;
  let orchestrator: JsonLineProcess;
  const updateId = 'Contoso/Sensor@1.2.0';

  beforeAll(async () => {
    harness = await startHarness();
    await harness.createGateway('gw-1');
    orchestrator = await harness.startOrchestrator('gw-1');
    dispatcher = await startDispatcher(harness);
    const imported = await api(dispatcher.url, 'POST', '/updates', makeUpdate('1.2.0', 2));
    expect(imported.status).toBe(201);
  });
  afterAll(async () => {
    await dispatcher?.close();
    await harness?.stop();
  });

  const device = async (id: string): Promise<DeviceView> => (await api(dispatcher.url, 'GET', `/devices/${id}`)).body as unknown as DeviceView;

  it('creates a child device, delivers its manifest to the gateway orchestrator by direct method, and shows it succeeded', async () => {
    const created = await api(dispatcher.url, 'POST', '/devices', { deviceId: 'mcu-1', parentId: 'gw-1', group: 'line-a', updateId });
    expect(created.status).toBe(201);
    // Registered in IoT Hub as the gateway's child.
    const identity = (await harness.registry.get('mcu-1')).responseBody as { deviceScope?: string };
    expect(identity.deviceScope).toMatch(/^ms-azure-iot-edge:\/\/gw-1-/);

    const delivered = await orchestrator.waitFor((e) => e.type === 'delivery' && e.deviceId === 'mcu-1', 'manifest at gw-1/otaOrchestrator');
    expect(delivered.via).toBe('method');
    const done = await eventually(async () => {
      const view = await device('mcu-1');
      return view.currentJob?.state === 'succeeded' ? view : undefined;
    }, 30_000, 'mcu-1 succeeded');
    expect(done.installedVersion).toBe('1.2.0');
    expect(done.assignedUpdateId).toBe(updateId);

    const history = (await api(dispatcher.url, 'GET', '/devices/mcu-1/history')).body.history as Array<{ kind: string; step?: string; status: string }>;
    const steps = history.filter((h) => h.kind === 'feedback').map((h) => `${h.step}:${h.status}`);
    expect(steps).toEqual(expect.arrayContaining(['job:started', 'download:succeeded', 'validate:succeeded', 'install:succeeded', 'run:succeeded', 'job:succeeded']));
    expect(history.some((h) => h.kind === 'delivery' && h.status === 'delivered')).toBe(true);

    const counts = (await api(dispatcher.url, 'GET', '/status/updates')).body.updates as Record<string, Record<string, number>>;
    expect(counts[updateId]?.succeeded).toBeGreaterThanOrEqual(1);
    const groups = (await api(dispatcher.url, 'GET', '/status/groups')).body.groups as Record<string, Record<string, number>>;
    expect(groups['line-a']?.succeeded).toBe(1);
  });

  it('assigns by group rule, and lists a failed device with the failing step and codes', async () => {
    const rule = await api(dispatcher.url, 'PUT', '/groups/line-b', { updateId });
    expect(rule.status).toBe(200);
    orchestrator.send({ cmd: 'set', failStep: 'install', id: 1 });
    await orchestrator.waitFor((e) => e.type === 'result' && e.id === 1, 'fail mode set');
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'mcu-2', parentId: 'gw-1', group: 'line-b' })).status).toBe(201);
    const failed = await eventually(async () => {
      const list = (await api(dispatcher.url, 'GET', '/status/failed')).body.failed as Array<{ deviceId: string; step: string; extendedResultCode: number }>;
      return list.find((f) => f.deviceId === 'mcu-2');
    }, 30_000, 'mcu-2 in the failed list');
    expect(failed.step).toBe('install');
    expect(failed.extendedResultCode).toBe(0x30000010);
    expect((await device('mcu-2')).assignedUpdateId).toBe(updateId);
    orchestrator.send({ cmd: 'set', failStep: '', id: 2 });
    await orchestrator.waitFor((e) => e.type === 'result' && e.id === 2, 'fail mode cleared');
  });

  it('with the gateway offline at creation: writes the twin pointer, then completes when the gateway returns', async () => {
    await harness.faults.setUpstream('gw-1', false);
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'mcu-3', parentId: 'gw-1', updateId })).status).toBe(201);
    await eventually(async () => ((await device('mcu-3')).currentJob?.delivery?.twinWritten ? true : undefined), 30_000, 'twin fallback written');
    expect((await device('mcu-3')).currentJob?.state).toBe('pending');
    await harness.faults.setUpstream('gw-1', true);
    const done = await eventually(async () => {
      const view = await device('mcu-3');
      return view.currentJob?.state === 'succeeded' ? view : undefined;
    }, 30_000, 'mcu-3 succeeded after the gateway returned');
    expect(done.installedVersion).toBe('1.2.0');
    // Twin and method both carried the job; the orchestrator ran it once.
    const runs = orchestrator.events.filter((e) => e.type === 'delivery' && e.deviceId === 'mcu-3');
    expect(runs).toHaveLength(1);
  });

  it('a manifest too big for a twin value goes to the twin as a signed detached pointer, and still completes', async () => {
    const big = makeUpdate('1.3.0', 3);
    (big.importManifest.instructions as { steps: Array<{ handlerProperties: Record<string, string> }> }).steps[0]!.handlerProperties.arguments = 'x'.repeat(6000);
    expect((await api(dispatcher.url, 'POST', '/updates', big)).status).toBe(201);
    await orchestrator.stop();
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'mcu-4', parentId: 'gw-1', updateId: 'Contoso/Sensor@1.3.0' })).status).toBe(201);
    await eventually(async () => ((await device('mcu-4')).currentJob?.delivery?.twinWritten ? true : undefined), 30_000, 'twin fallback for mcu-4');
    const twin = (await harness.registry.getModuleTwin('gw-1', 'otaOrchestrator')).responseBody as unknown as {
      properties: { desired: { deviceUpdate: { service: { updateManifest: string; fileUrls: Record<string, string> } } } };
    };
    const service = twin.properties.desired.deviceUpdate.service;
    expect(JSON.parse(service.updateManifest)).toMatchObject({ detachedManifestFileId: 'manifest' });
    expect(Object.keys(service.fileUrls)).toEqual(expect.arrayContaining(['manifest', 'file0', 'file1', 'file2']));

    // The artifact store counts what it serves (the cloud egress): two full downloads of one file.
    const fileUrl = service.fileUrls.file0!;
    const sha256 = new URL(fileUrl).pathname.split('/')[2]!;
    type Count = { sha256: string; requests: number; completed: number; bytesSent: number };
    const countOf = async (): Promise<Count> => ((await api(dispatcher.url, 'GET', '/status/artifacts')).body.artifacts as Count[]).find((a) => a.sha256 === sha256)
      ?? { sha256, requests: 0, completed: 0, bytesSent: 0 };
    const before = await countOf();
    const sizes = [(await (await fetch(fileUrl)).arrayBuffer()).byteLength, (await (await fetch(fileUrl)).arrayBuffer()).byteLength];
    expect(sizes[0]).toBeGreaterThan(0);
    const expected = { sha256, requests: before.requests + 2, completed: before.completed + 2, bytesSent: before.bytesSent + sizes[0]! + sizes[1]! };
    await eventually(async () => (JSON.stringify(await countOf()) === JSON.stringify(expected) ? true : undefined), 10_000, 'the download counts');

    orchestrator = await harness.startOrchestrator('gw-1');
    await eventually(async () => ((await device('mcu-4')).currentJob?.state === 'succeeded' ? true : undefined), 30_000, 'mcu-4 succeeded');
    expect((await device('mcu-4')).installedVersion).toBe('1.3.0');
  });

  it('survives malformed and oversized feedback arriving over Event Hubs, counting each refusal by code', async () => {
    const created = (await harness.registry.create({ deviceId: 'noisy' })).responseBody as unknown as { authentication: { symmetricKey: { primaryKey: string } } };
    const client = DeviceClient.fromConnectionString(`HostName=${harness.info.hostName};DeviceId=noisy;SharedAccessKey=${created.authentication.symmetricKey.primaryKey}`, Mqtt);
    await client.setOptions({ ca: readFileSync(harness.info.caFile, 'utf8') });
    await client.open();
    try {
      const before = { ...dispatcher.ingestion.counters.rejected };
      for (const body of ['{not json', JSON.stringify({ schema: 'edge-ota/feedback/1', jobId: 'x' }), 'x'.repeat(20_000)]) {
        const message = new Message(body);
        message.properties.add('edge-ota-message', 'feedback');
        await client.sendEvent(message);
      }
      await eventually(() => ((dispatcher.ingestion.counters.rejected.FEEDBACK_INVALID ?? 0) - (before.FEEDBACK_INVALID ?? 0) >= 3 ? true : undefined), 30_000, 'three refusals');
    } finally {
      await client.close();
    }
    const counters = (await api(dispatcher.url, 'GET', '/status/ingestion')).body as { rejected: Record<string, number> };
    expect(counters.rejected.FEEDBACK_INVALID).toBeGreaterThanOrEqual(3);
    expect((await api(dispatcher.url, 'GET', '/health')).status).toBe(200);
  });

  it('a gateway without a parent gets its own job on its own otaOrchestrator', async () => {
    await harness.createGateway('gw-2');
    const own = await harness.startOrchestrator('gw-2');
    // The identity exists already (deployment); the API registers it in the dispatcher only through a create.
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'gw-2', isGateway: true, updateId })).status).toBe(409);
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'gw-3', isGateway: true, updateId })).status).toBe(201);
    await harness.registry.applyConfigurationContentOnDevice('gw-3', { modulesContent: { $edgeAgent: { 'properties.desired': { schemaVersion: '1.1', runtime: { type: 'docker', settings: { minDockerVersion: 'v1.25' } }, systemModules: { edgeAgent: { type: 'docker', settings: { image: 'a', createOptions: '{}' } }, edgeHub: { type: 'docker', status: 'running', restartPolicy: 'always', settings: { image: 'b', createOptions: '{}' } } }, modules: { otaOrchestrator: { version: '1.0', type: 'docker', status: 'running', restartPolicy: 'always', settings: { image: 'c', createOptions: '{}' } } } } }, $edgeHub: { 'properties.desired': { schemaVersion: '1.2', routes: {}, storeAndForwardConfiguration: { timeToLiveSecs: 7200 } } } } });
    const gw3 = await harness.startOrchestrator('gw-3');
    await gw3.waitFor((e) => e.type === 'delivery' && e.deviceId === 'gw-3', 'gw-3 job on its own orchestrator', 30_000);
    await eventually(async () => ((await device('gw-3')).currentJob?.state === 'succeeded' ? true : undefined), 30_000, 'gw-3 succeeded');
    await own.stop();
    await gw3.stop();
  });

  it('a nested child gateway gets its own job on its own otaOrchestrator, not on its parent\'s', async () => {
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'gw-child', parentId: 'gw-1', isGateway: true, updateId })).status).toBe(201);
    const identity = (await harness.registry.get('gw-child')).responseBody as { parentScopes?: string[] };
    expect(identity.parentScopes?.[0]).toMatch(/^ms-azure-iot-edge:\/\/gw-1-/);
    await harness.registry.applyConfigurationContentOnDevice('gw-child', { modulesContent: { $edgeAgent: { 'properties.desired': { schemaVersion: '1.1', runtime: { type: 'docker', settings: { minDockerVersion: 'v1.25' } }, systemModules: { edgeAgent: { type: 'docker', settings: { image: 'a', createOptions: '{}' } }, edgeHub: { type: 'docker', status: 'running', restartPolicy: 'always', settings: { image: 'b', createOptions: '{}' } } }, modules: { otaOrchestrator: { version: '1.0', type: 'docker', status: 'running', restartPolicy: 'always', settings: { image: 'c', createOptions: '{}' } } } } }, $edgeHub: { 'properties.desired': { schemaVersion: '1.2', routes: {}, storeAndForwardConfiguration: { timeToLiveSecs: 7200 } } } } });
    const child = await harness.startOrchestrator('gw-child');
    try {
      const delivered = await child.waitFor((e) => e.type === 'delivery' && e.deviceId === 'gw-child', 'gw-child job on its own orchestrator', 30_000);
      expect(delivered.deviceId).toBe('gw-child');
      await eventually(async () => ((await device('gw-child')).currentJob?.state === 'succeeded' ? true : undefined), 30_000, 'gw-child succeeded');
      expect((await device('gw-child')).installedVersion).toBe('1.2.0');
      // The parent's orchestrator never saw it.
      expect(orchestrator.events.some((e) => e.type === 'delivery' && e.deviceId === 'gw-child')).toBe(false);
    } finally {
      await child.stop();
    }
  });
});
