import iotDevice from 'azure-iot-device';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorFixture } from './support/emulatorFixture.ts';
import { eventually, startEmulator } from './support/emulatorFixture.ts';
import type { EventGridSink } from './support/eventGridSink.ts';
import { startEventGridSink } from './support/eventGridSink.ts';

const { Message } = iotDevice;

// Conformance: what reaches cloud consumers, as Event Grid webhook deliveries in the Event Grid schema.

describe('cloud events over Event Grid', () => {
  let sink: EventGridSink;
  let hub: EmulatorFixture;
  beforeAll(async () => {
    sink = await startEventGridSink();
    hub = await startEmulator({ eventGridWebhooks: [sink.url] });
  });
  afterAll(async () => {
    await hub?.stop();
    await sink?.close();
  });

  it('validates the subscription before the first delivery', async () => {
    await hub.createDevice('eg-first');
    await eventually(() => sink.ofType('DeviceCreated').find((e) => e.subject === 'devices/eg-first'), 10_000, 'DeviceCreated');
    expect(sink.validations).toBe(1);
  });

  it('publishes DeviceCreated with the twin and DeviceDeleted', async () => {
    await hub.registry.create({ deviceId: 'eg-life' });
    await hub.registry.updateTwin('eg-life', { tags: { group: 'a' } }, '*');
    await hub.registry.delete('eg-life');
    const created = await eventually(() => sink.ofType('DeviceCreated').find((e) => e.subject === 'devices/eg-life'), 10_000, 'created');
    const deleted = await eventually(() => sink.ofType('DeviceDeleted').find((e) => e.subject === 'devices/eg-life'), 10_000, 'deleted');
    expect(created.data).toMatchObject({ deviceId: 'eg-life', hubName: 'emulator', twin: { deviceId: 'eg-life', version: 1 } });
    expect((deleted.data.twin as { tags: unknown }).tags).toEqual({ group: 'a' });
    expect(created.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(sink.events.indexOf(created)).toBeLessThan(sink.events.indexOf(deleted));
  });

  it('publishes DeviceConnected, DeviceTelemetry with properties, and DeviceDisconnected', async () => {
    const { key } = await hub.createDevice('eg-tel');
    const client = await hub.openDevice('eg-tel', key);
    const json = new Message(JSON.stringify({ temperature: 21.5 }));
    json.contentType = 'application/json';
    json.contentEncoding = 'utf-8';
    json.messageId = 'm-1';
    json.properties.add('kind', 'reading');
    await client.sendEvent(json);
    await client.sendEvent(new Message(Buffer.from([0, 1, 2, 255])));
    await client.close();

    await eventually(() => sink.ofType('DeviceDisconnected').find((e) => e.subject === 'devices/eg-tel'), 10_000, 'disconnected');
    const forDevice = sink.events.filter((e) => e.subject === 'devices/eg-tel').map((e) => e.eventType.replace('Microsoft.Devices.', ''));
    expect(forDevice).toEqual(['DeviceCreated', 'DeviceConnected', 'DeviceTelemetry', 'DeviceTelemetry', 'DeviceDisconnected']);
    const [jsonEvent, binaryEvent] = sink.ofType('DeviceTelemetry').filter((e) => e.subject === 'devices/eg-tel');
    expect(jsonEvent?.data).toMatchObject({
      body: { temperature: 21.5 },
      properties: { kind: 'reading' },
      systemProperties: { 'iothub-connection-device-id': 'eg-tel', 'iothub-message-id': 'm-1', 'iothub-content-type': 'application/json' },
    });
    expect(binaryEvent?.data.body).toBe(Buffer.from([0, 1, 2, 255]).toString('base64'));
    const connected = sink.ofType('DeviceConnected').find((e) => e.subject === 'devices/eg-tel');
    expect((connected?.data.deviceConnectionStateEventInfo as { sequenceNumber: string }).sequenceNumber).toMatch(/^[0-9a-f]{32}$/);
  });

  it('retries failed deliveries and keeps each device in order', async () => {
    const { key } = await hub.createDevice('eg-retry');
    const client = await hub.openDevice('eg-retry', key);
    await eventually(() => sink.ofType('DeviceConnected').find((e) => e.subject === 'devices/eg-retry'), 10_000, 'connected');
    sink.failNext(3);
    for (let i = 0; i < 5; i += 1) {
      const message = new Message(JSON.stringify({ i }));
      message.contentType = 'application/json';
      message.contentEncoding = 'utf-8';
      await client.sendEvent(message);
    }
    const telemetry = await eventually(() => {
      const got = sink.ofType('DeviceTelemetry').filter((e) => e.subject === 'devices/eg-retry');
      return got.length === 5 ? got : undefined;
    }, 20_000, 'five telemetry events');
    expect(telemetry.map((e) => (e.data.body as { i: number }).i)).toEqual([0, 1, 2, 3, 4]);
    expect(telemetry[0]?.deliveryCount).toBe(3);
  });
});
