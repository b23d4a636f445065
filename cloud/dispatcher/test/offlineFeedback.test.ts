import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FeedbackMessage } from '@edge-ota/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDispatcher } from '../src/app.ts';
import type { Dispatcher } from '../src/app.ts';
import type { IdentityHub, MethodOutcome } from '../src/hubClient.ts';
import { api, makeKeys, makeUpdate } from './support/harness.ts';

// Feedback for jobs the dispatcher never created: an orchestrator installed an update from a USB drop-in (or
// while cut off from the cloud) and reports its steps once the cloud is back. Through the whole ingestion path
// (Event Grid webhook -> EventIngestion -> FeedbackIngestor -> store) and the API views.

class QuietHub implements IdentityHub {
  createDevice(): Promise<{ generationId: string }> {
    return Promise.resolve({ generationId: 'g' });
  }
  invokeModuleMethod(): Promise<MethodOutcome> {
    return Promise.resolve({ status: 200, payload: { accepted: true, disposition: 'queued' } });
  }
  patchModuleDesired(): Promise<void> {
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

let counter = 0;
function telemetry(sender: { deviceId: string; moduleId: string }, message: FeedbackMessage): unknown[] {
  counter += 1;
  return [{
    id: `t-${counter}`, eventType: 'Microsoft.Devices.DeviceTelemetry', eventTime: new Date().toISOString(), subject: `devices/${sender.deviceId}/${sender.moduleId}`,
    data: {
      properties: { 'edge-ota-message': 'feedback' },
      systemProperties: { 'iothub-connection-device-id': sender.deviceId, 'iothub-connection-module-id': sender.moduleId, 'iothub-enqueuedtime': new Date().toISOString() },
      body: message,
    },
  }];
}

function feedback(jobId: string, deviceId: string, gatewayId: string, sequence: number, step: FeedbackMessage['step'], status: FeedbackMessage['status'], extra: Partial<FeedbackMessage> = {}): FeedbackMessage {
  return {
    schema: 'edge-ota/feedback/1', messageId: `${jobId}/${sequence}`, jobId, sequence, gatewayId, deviceId, updateId: { provider: 'Contoso', name: 'Sensor', version: '2.0.0' },
    step, status, resultCode: status === 'failed' ? 0 : 700, extendedResultCode: 0, timestamp: new Date(Date.UTC(2026, 10, 20, 8, 0, sequence)).toISOString(), ...extra,
  };
}

interface JobView { jobId: string; origin: string; state: string; updateId: string; step?: string; delivery?: unknown }

describe('feedback for jobs the dispatcher did not create (offline installs)', () => {
  let dir: string;
  let dispatcher: Dispatcher;
  const gw = { deviceId: 'gw-a', moduleId: 'otaOrchestrator' };
  const post = async (sender: { deviceId: string; moduleId: string }, message: FeedbackMessage): Promise<{ status: number; body: Record<string, unknown> }> =>
    api(dispatcher.url, 'POST', '/events/eventgrid', telemetry(sender, message));
  const jobs = async (deviceId: string): Promise<JobView[]> => (await api(dispatcher.url, 'GET', `/devices/${deviceId}/jobs`)).body.jobs as JobView[];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-offline-'));
    const keys = makeKeys(dir);
    dispatcher = await createDispatcher({
      hubConnectionString: 'unused', hub: new QuietHub(), dataDir: path.join(dir, 'data'), signingKey: keys.signingKey, trustStore: keys.trustStore,
    });
    expect((await api(dispatcher.url, 'POST', '/updates', makeUpdate('1.0.0'))).status).toBe(201);
    for (const body of [
      { deviceId: 'gw-a', isGateway: true },
      { deviceId: 'gw-b', isGateway: true },
      { deviceId: 'mcu-a', parentId: 'gw-a' },
      { deviceId: 'mcu-b', parentId: 'gw-b' },
    ]) expect((await api(dispatcher.url, 'POST', '/devices', body)).status).toBe(201);
  });
  afterAll(async () => {
    await dispatcher?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('records the offline job of a device behind the sending gateway, applies every step, and sets the installed version', async () => {
    const job = 'usb-abc-mcu-a';
    expect((await post(gw, feedback(job, 'mcu-a', 'gw-a', 0, 'job', 'started'))).status).toBe(200);
    for (const [sequence, step] of [[1, 'download'], [2, 'validate'], [3, 'install'], [4, 'run']] as const) {
      expect((await post(gw, feedback(job, 'mcu-a', 'gw-a', sequence, step, 'succeeded'))).status).toBe(200);
    }
    // A repeat (store and forward resent it) counts once.
    const duplicatesBefore = dispatcher.ingestion.counters.duplicate;
    const again = await post(gw, feedback(job, 'mcu-a', 'gw-a', 4, 'run', 'succeeded'));
    expect(again.body.results).toEqual([{ result: 'duplicate' }]);
    expect(dispatcher.ingestion.counters.duplicate).toBe(duplicatesBefore + 1);
    expect((await post(gw, feedback(job, 'mcu-a', 'gw-a', 5, 'job', 'succeeded', { installedVersion: '2.0.0' }))).status).toBe(200);

    const [view] = await jobs('mcu-a');
    expect(view).toMatchObject({ jobId: job, origin: 'offline', state: 'succeeded', updateId: 'Contoso/Sensor@2.0.0', step: 'job' });
    expect(view!.delivery).toBeUndefined();
    const device = (await api(dispatcher.url, 'GET', '/devices/mcu-a')).body as { installedVersion: string; currentJob: JobView };
    expect(device.installedVersion).toBe('2.0.0');
    expect(device.currentJob.origin).toBe('offline');
    const history = (await api(dispatcher.url, 'GET', '/devices/mcu-a/history')).body.history as Array<{ kind: string; step?: string; status: string }>;
    expect(history.filter((h) => h.kind === 'feedback').map((h) => `${h.step}:${h.status}`))
      .toEqual(['job:started', 'download:succeeded', 'validate:succeeded', 'install:succeeded', 'run:succeeded', 'job:succeeded']);
    expect(history.some((h) => h.kind === 'delivery' && h.status === 'offlineJobRecorded')).toBe(true);
    const counts = (await api(dispatcher.url, 'GET', '/status/updates')).body.updates as Record<string, Record<string, number>>;
    expect(counts['Contoso/Sensor@2.0.0']).toEqual({ succeeded: 1 });
  });

  it('records the sending gateway\'s own offline job', async () => {
    expect((await post(gw, feedback('usb-gw', 'gw-a', 'gw-a', 0, 'job', 'started'))).status).toBe(200);
    expect(await jobs('gw-a')).toEqual([expect.objectContaining({ jobId: 'usb-gw', origin: 'offline', state: 'inProgress' })]);
  });

  it('still refuses feedback for unknown devices, devices behind another gateway, and senders that are not the gateway\'s orchestrator', async () => {
    const unknown = await post(gw, feedback('usb-1', 'ghost', 'gw-a', 0, 'job', 'started'));
    expect(unknown.status).toBe(400);
    expect((unknown.body.error as { code: string }).code).toBe('FEEDBACK_UNKNOWN_JOB');
    const elsewhere = await post(gw, feedback('usb-2', 'mcu-b', 'gw-a', 0, 'job', 'started'));
    expect((elsewhere.body.error as { code: string }).code).toBe('FEEDBACK_UNKNOWN_JOB');
    // Another gateway is not behind gw-a either.
    const otherGateway = await post(gw, feedback('usb-3', 'gw-b', 'gw-a', 0, 'job', 'started'));
    expect((otherGateway.body.error as { code: string }).code).toBe('FEEDBACK_UNKNOWN_JOB');
    const wrongModule = await post({ deviceId: 'gw-a', moduleId: 'contentCache' }, feedback('usb-4', 'mcu-a', 'gw-a', 0, 'job', 'started'));
    expect((wrongModule.body.error as { code: string }).code).toBe('FEEDBACK_SENDER_MISMATCH');
    const wrongGateway = await post({ deviceId: 'gw-b', moduleId: 'otaOrchestrator' }, feedback('usb-5', 'mcu-a', 'gw-a', 0, 'job', 'started'));
    expect((wrongGateway.body.error as { code: string }).code).toBe('FEEDBACK_SENDER_MISMATCH');
    expect(await jobs('mcu-b')).toEqual([]);
    expect(await jobs('gw-b')).toEqual([]);
    expect((await jobs('mcu-a')).map((j) => j.jobId)).toEqual(['usb-abc-mcu-a']);
  });

  it('shows jobs it delivered itself as dispatched', async () => {
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'mcu-c', parentId: 'gw-a', updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(201);
    const created = [{
      id: 'c-mcu-c', eventType: 'Microsoft.Devices.DeviceCreated', eventTime: new Date().toISOString(), subject: 'devices/mcu-c',
      data: { deviceId: 'mcu-c', twin: { deviceId: 'mcu-c', capabilities: { iotEdge: false } } },
    }];
    expect((await api(dispatcher.url, 'POST', '/events/eventgrid', created)).status).toBe(200);
    const [view] = await jobs('mcu-c');
    expect(view).toMatchObject({ origin: 'dispatched', updateId: 'Contoso/Sensor@1.0.0' });
    expect(view!.delivery).toBeDefined();
  });
});
