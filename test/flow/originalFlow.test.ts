import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dispatcher } from '../../cloud/dispatcher/src/app.ts';
import type { Harness } from '../../cloud/dispatcher/test/support/harness.ts';
import { api, eventually, startHarness, startDispatcher } from '../../cloud/dispatcher/test/support/harness.ts';
import type { OrchestratorProcess } from '../support/orchestratorProcess.ts';
import { startOrchestratorProcess } from '../support/orchestratorProcess.ts';

// The original flow with the real parts on both ends: a device created through the dispatcher's API, the lifecycle
// event read from the emulator's Event Hubs endpoint, a manifest the dispatcher signed delivered to the real
// otaOrchestrator module of the device's parent gateway, the files downloaded from the dispatcher's artifact
// store and installed, the feedback ingested, and the API showing the device on the new version.

interface DeviceView {
  installedVersion: string | null;
  currentJob?: { state: string; step?: string } | null;
}

describe('original flow: dispatcher -> real otaOrchestrator -> feedback', () => {
  let harness: Harness;
  let dispatcher: Dispatcher;
  let orchestrator: OrchestratorProcess;
  let installRoot: string;
  const payload = randomBytes(64 * 1024);
  const updateId = 'Contoso/SensorApp@2.1.0';

  beforeAll(async () => {
    installRoot = mkdtempSync(path.join(tmpdir(), 'flow-install-'));
    harness = await startHarness();
    await harness.createGateway('gw-flow');
    dispatcher = await startDispatcher(harness);
    const imported = await api(dispatcher.url, 'POST', '/updates', {
      importManifest: {
        updateId: { provider: 'Contoso', name: 'SensorApp', version: '2.1.0' },
        compatibility: [{ manufacturer: 'Contoso', model: 'Sensor' }],
        instructions: { steps: [{ handler: 'edge-ota/file:1', files: ['sensor-app.bin'], handlerProperties: { destination: path.join(installRoot, 'sensor-app') } }] },
        files: [{ filename: 'sensor-app.bin', sizeInBytes: payload.length, hashes: { sha256: createHash('sha256').update(payload).digest('base64') } }],
        manifestVersion: '5.0',
        createdDateTime: new Date(Date.now() - 60_000).toISOString(),
      },
      files: { 'sensor-app.bin': payload.toString('base64') },
    });
    expect(imported.status).toBe(201);
  }, 90_000);
  afterAll(async () => {
    await orchestrator?.stop();
    await dispatcher?.close();
    await harness?.stop();
  });

  let stateDir: string;
  const startGatewayModule = async (): Promise<OrchestratorProcess> => {
    const generationId = (await harness.registry.getModule('gw-flow', 'otaOrchestrator')).responseBody.generationId ?? '';
    return startOrchestratorProcess({
      hub: harness.info,
      deviceId: 'gw-flow',
      generationId,
      env: {
        OTA_STATE_DIR: stateDir,
        // The root public key file exactly as the dispatcher's key ceremony wrote it.
        OTA_TRUST_ROOTS_FILE: harness.keys.rootPublicFile,
        OTA_TRUST_ADU_SERVICE_ROOTS: '0',
        OTA_DEVICE_PROPERTIES: JSON.stringify({ manufacturer: 'Contoso', model: 'Gateway' }),
        OTA_TARGETS: JSON.stringify({
          'sensor-1': { properties: { manufacturer: 'Contoso', model: 'Sensor' } },
          'sensor-2': { properties: { manufacturer: 'Contoso', model: 'Sensor' } },
          'sensor-3': { properties: { manufacturer: 'Contoso', model: 'Sensor' } },
        }),
        OTA_FILE_ROOTS: installRoot,
      },
    });
  };
  const finished = (deviceId: string): Promise<DeviceView> =>
    eventually(async () => {
      const device = (await api(dispatcher.url, 'GET', `/devices/${deviceId}`)).body as unknown as DeviceView;
      return device.currentJob?.state === 'succeeded' || device.currentJob?.state === 'failed' ? device : undefined;
    }, 60_000, `${deviceId} to finish`);

  it('installs the assigned update on a child device through its gateway and shows it succeeded', async () => {
    stateDir = mkdtempSync(path.join(tmpdir(), 'flow-orchestrator-'));
    orchestrator = await startGatewayModule();
    const created = await api(dispatcher.url, 'POST', '/devices', { deviceId: 'sensor-1', parentId: 'gw-flow', updateId });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const view = await finished('sensor-1');
    const history = (await api(dispatcher.url, 'GET', '/devices/sensor-1/history')).body.history as Array<{ step?: string; status: string; resultDetails?: string }>;
    expect(view.currentJob?.state, JSON.stringify(history.slice(-3))).toBe('succeeded');
    expect(view.installedVersion).toBe('2.1.0');
    const steps = history.filter((h) => h.step).map((h) => `${h.step ?? ''}:${h.status}`);
    expect(steps).toEqual(expect.arrayContaining(['manifest:succeeded', 'download:succeeded', 'validate:succeeded', 'install:succeeded', 'commit:succeeded', 'job:succeeded']));
    expect(readFileSync(path.join(installRoot, 'sensor-app', 'sensor-app.bin')).equals(payload)).toBe(true);
  }, 90_000);

  it('completes a device created while its gateway module is down, once the module is back', async () => {
    await orchestrator.stop();
    const created = await api(dispatcher.url, 'POST', '/devices', { deviceId: 'sensor-2', parentId: 'gw-flow', updateId });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    // The dispatcher cannot reach the module: the job waits in the module twin and in its retry queue.
    await eventually(async () => {
      const twin = (await harness.registry.getModuleTwin('gw-flow', 'otaOrchestrator')).responseBody;
      return (twin.properties.desired as { deviceUpdate?: { service?: unknown } }).deviceUpdate?.service ? true : undefined;
    }, 30_000, 'the delivery in the module twin');
    orchestrator = await startGatewayModule();
    const view = await finished('sensor-2');
    expect(view.currentJob?.state).toBe('succeeded');
    expect(view.installedVersion).toBe('2.1.0');
  }, 120_000);

  it('installs a multi-step update: the parent imported with its child, both steps run, each its own tool.bin', async () => {
    const parentPayload = randomBytes(8 * 1024);
    const childPayload = randomBytes(16 * 1024);
    const compatibility = [{ manufacturer: 'Contoso', model: 'Sensor' }];
    // One file name in both, other bytes: only the file ids (unique across parent and child) tell them apart.
    const update = (name: string, version: string, payload: Buffer, steps: unknown[]): { importManifest: Record<string, unknown>; files: Record<string, string> } => ({
      importManifest: {
        updateId: { provider: 'Contoso', name, version }, compatibility, instructions: { steps },
        files: [{ filename: 'tool.bin', sizeInBytes: payload.length, hashes: { sha256: createHash('sha256').update(payload).digest('base64') } }],
        manifestVersion: '5.0', createdDateTime: new Date(Date.now() - 60_000).toISOString(),
      },
      files: { 'tool.bin': payload.toString('base64') },
    });
    const fileStep = (folder: string): Record<string, unknown> => ({ handler: 'edge-ota/file:1', files: ['tool.bin'], handlerProperties: { destination: path.join(installRoot, folder) } });
    const child = update('SensorTools', '1.0', childPayload, [fileStep('child')]);
    const parent = update('SensorSuite', '3.0.0', parentPayload, [fileStep('parent'), { type: 'reference', updateId: { provider: 'Contoso', name: 'SensorTools', version: '1.0' } }]);
    const imported = await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [child] });
    expect(imported.status, JSON.stringify(imported.body)).toBe(201);

    const created = await api(dispatcher.url, 'POST', '/devices', { deviceId: 'sensor-3', parentId: 'gw-flow', updateId: 'Contoso/SensorSuite@3.0.0' });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const view = await finished('sensor-3');
    const history = (await api(dispatcher.url, 'GET', '/devices/sensor-3/history')).body.history as Array<{ step?: string; status: string; resultDetails?: string }>;
    expect(view.currentJob?.state, JSON.stringify(history.slice(-3))).toBe('succeeded');
    expect(view.installedVersion).toBe('3.0.0');
    expect(readFileSync(path.join(installRoot, 'parent', 'tool.bin')).equals(parentPayload)).toBe(true);
    expect(readFileSync(path.join(installRoot, 'child', 'tool.bin')).equals(childPayload)).toBe(true);
  }, 120_000);
});
