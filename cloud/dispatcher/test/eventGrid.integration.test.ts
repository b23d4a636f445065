import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dispatcher } from '../src/app.ts';
import type { Harness, JsonLineProcess } from './support/harness.ts';
import { api, eventually, freePort, makeUpdate, startHarness, startDispatcher } from './support/harness.ts';

// The Event Grid webhook against the emulator's real Event Grid publisher (validation handshake first), with
// the Event Hubs consumer running at the same time: every hub event reaches the dispatcher twice, through two
// adapters, and must count once. Then events replayed and reordered by hand.

interface JobView { jobId: string; state: string; delivery?: { twinWritten: boolean } }

describe('dispatcher with the Event Grid webhook and Event Hubs together', () => {
  let harness: Harness;
  let dispatcher: Dispatcher;
  let orchestrator: JsonLineProcess;
  const updateId = 'Contoso/Sensor@2.0.0';

  beforeAll(async () => {
    const port = await freePort();
    harness = await startHarness({ eventGridWebhooks: [`http://127.0.0.1:${port}/events/eventgrid`] });
    await harness.createGateway('gw-g');
    orchestrator = await harness.startOrchestrator('gw-g');
    dispatcher = await startDispatcher(harness, { port });
    expect((await api(dispatcher.url, 'POST', '/updates', makeUpdate('2.0.0'))).status).toBe(201);
    expect((await api(dispatcher.url, 'PUT', '/groups/line-r', { updateId })).status).toBe(200);
  });
  afterAll(async () => {
    await dispatcher?.close();
    await harness?.stop();
  });

  const jobs = async (id: string): Promise<JobView[]> => (await api(dispatcher.url, 'GET', `/devices/${id}/jobs`)).body.jobs as JobView[];

  it('runs a job once although each event arrives through both adapters', async () => {
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'mcu-g1', parentId: 'gw-g', updateId })).status).toBe(201);
    await eventually(async () => ((await jobs('mcu-g1'))[0]?.state === 'succeeded' ? true : undefined), 30_000, 'mcu-g1 succeeded');
    // Wait until both adapters have seen the lifecycle event and the feedback, then count.
    await eventually(() => (dispatcher.ingestion.counters.duplicate >= 2 ? true : undefined), 30_000, 'duplicates from the second adapter');
    expect(await jobs('mcu-g1')).toHaveLength(1);
    expect(orchestrator.events.filter((e) => e.type === 'delivery' && e.deviceId === 'mcu-g1')).toHaveLength(1);
    const history = (await api(dispatcher.url, 'GET', '/devices/mcu-g1/history')).body.history as Array<{ kind: string; status: string; step?: string }>;
    const terminal = history.filter((h) => h.kind === 'feedback' && h.step === 'job' && h.status === 'succeeded');
    expect(terminal).toHaveLength(1);
  });

  it('a delete that overtakes its create leaves no work, and a replayed create stays a duplicate', async () => {
    const twin = { deviceId: 'ghost-1', deviceScope: 'ms-azure-iot-edge://gw-g-0123456789abcdef', capabilities: { iotEdge: false }, tags: { group: 'line-r' } };
    const event = (eventType: string, eventTime: string, id: string): Record<string, unknown> => ({
      id, topic: '/hub', subject: 'devices/ghost-1', eventType, eventTime, data: { twin, hubName: 'emulator', deviceId: 'ghost-1' }, dataVersion: '', metadataVersion: '1',
    });
    const headers = 'application/json';
    const deleted = await api(dispatcher.url, 'POST', '/events/eventgrid', [event('Microsoft.Devices.DeviceDeleted', '2026-11-22T10:00:02.000Z', 'e-2')], headers);
    expect(deleted.status).toBe(200);
    const created = await api(dispatcher.url, 'POST', '/events/eventgrid', [event('Microsoft.Devices.DeviceCreated', '2026-11-22T10:00:01.000Z', 'e-1')], headers);
    expect(created.status).toBe(200);
    expect((created.body.results as Array<{ result: string }>)[0]!.result).toBe('stale');
    const device = (await api(dispatcher.url, 'GET', '/devices/ghost-1')).body;
    expect(device.lifecycle).toBe('deleted');
    expect(await jobs('ghost-1')).toEqual([]);
    // The delete again: a duplicate, nothing changes.
    const again = await api(dispatcher.url, 'POST', '/events/eventgrid', [event('Microsoft.Devices.DeviceDeleted', '2026-11-22T10:00:02.000Z', 'e-2')], headers);
    expect((again.body.results as Array<{ result: string }>)[0]!.result).toBe('duplicate');
  });

  it('deleting a device whose job waits for an offline gateway cancels the job and puts a cancel into the twin', async () => {
    await harness.faults.setUpstream('gw-g', false);
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'mcu-g2', parentId: 'gw-g', group: 'line-r' })).status).toBe(201);
    await eventually(async () => ((await jobs('mcu-g2'))[0]?.delivery?.twinWritten ? true : undefined), 30_000, 'twin fallback for mcu-g2');
    await harness.registry.delete('mcu-g2');
    await eventually(async () => ((await jobs('mcu-g2'))[0]?.state === 'cancelled' ? true : undefined), 30_000, 'mcu-g2 job cancelled');
    await harness.faults.setUpstream('gw-g', true);
    // edgeHub replays the held desired patches in order: the job, then its cancel. No direct call carried it.
    const jobId = (await jobs('mcu-g2'))[0]!.jobId;
    await orchestrator.waitFor((e) => e.type === 'cancel' && e.jobId === jobId, 'cancel workflow in the twin', 30_000);
    expect(orchestrator.events.some((e) => e.type === 'delivery' && e.deviceId === 'mcu-g2' && e.via === 'method')).toBe(false);
  });

  it('answers the handshake, and refuses malformed events and feedback with stable codes', async () => {
    const handshake = await api(dispatcher.url, 'POST', '/events/eventgrid', [{ id: 'v', eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent', eventTime: new Date().toISOString(), data: { validationCode: 'abc' } }]);
    expect(handshake.status).toBe(200);
    // Without the aeg-event-type header it is an ordinary (ignored) event; with it, the code comes back.
    const validation = await fetch(`${dispatcher.url}/events/eventgrid`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'aeg-event-type': 'SubscriptionValidation' },
      body: JSON.stringify([{ id: 'v', eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent', eventTime: new Date().toISOString(), data: { validationCode: 'abc' } }]),
    });
    expect(await validation.json()).toEqual({ validationResponse: 'abc' });

    const notArray = await api(dispatcher.url, 'POST', '/events/eventgrid', { id: 1 });
    expect(notArray.status).toBe(400);
    expect((notArray.body.error as { code: string }).code).toBe('EVENT_INVALID');
    const malformed = await api(dispatcher.url, 'POST', '/events/eventgrid', [{ id: 'x', eventType: 'Microsoft.Devices.DeviceCreated' }]);
    expect((malformed.body.error as { code: string }).code).toBe('EVENT_INVALID');
    const notJson = await api(dispatcher.url, 'POST', '/events/eventgrid', '{nope');
    expect((notJson.body.error as { code: string }).code).toBe('BODY_NOT_JSON');

    const telemetry = (body: unknown, sender = 'gw-g'): Record<string, unknown> => ({
      id: `t-${Math.random()}`, eventType: 'Microsoft.Devices.DeviceTelemetry', eventTime: new Date().toISOString(), subject: `devices/${sender}`,
      data: { properties: { 'edge-ota-message': 'feedback' }, systemProperties: { 'iothub-connection-device-id': sender, 'iothub-connection-module-id': 'otaOrchestrator' }, body },
    });
    const bad = await api(dispatcher.url, 'POST', '/events/eventgrid', [telemetry({ schema: 'edge-ota/feedback/1', jobId: 5 })]);
    expect((bad.body.error as { code: string }).code).toBe('FEEDBACK_INVALID');
    const huge = await api(dispatcher.url, 'POST', '/events/eventgrid', [telemetry(Buffer.alloc(20_000, 'a').toString('base64'))]);
    expect((huge.body.error as { code: string }).code).toBe('FEEDBACK_INVALID');
    const feedback = {
      schema: 'edge-ota/feedback/1', messageId: 'job-unknown/0', jobId: 'job-unknown', sequence: 0, gatewayId: 'gw-g', deviceId: 'nobody',
      updateId: { provider: 'Contoso', name: 'Sensor', version: '2.0.0' }, step: 'job', status: 'started', resultCode: 0, extendedResultCode: 0, timestamp: new Date().toISOString(),
    };
    const unknown = await api(dispatcher.url, 'POST', '/events/eventgrid', [telemetry(feedback)]);
    expect((unknown.body.error as { code: string }).code).toBe('FEEDBACK_UNKNOWN_JOB');
    const spoofed = await api(dispatcher.url, 'POST', '/events/eventgrid', [telemetry(feedback, 'someone-else')]);
    expect((spoofed.body.error as { code: string }).code).toBe('FEEDBACK_SENDER_MISMATCH');
    expect((await api(dispatcher.url, 'GET', '/health')).status).toBe(200);
  });
});
