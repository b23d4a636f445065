import { EventHubConsumerClient } from '@azure/event-hubs';
import type { Checkpoint, PartitionContext, ReceivedEventData, Subscription } from '@azure/event-hubs';
import iotDevice from 'azure-iot-device';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorFixture } from './support/emulatorFixture.ts';
import { eventually, startEmulator } from './support/emulatorFixture.ts';

const { Message } = iotDevice;

// Conformance of the Event Hubs-compatible endpoint with the real @azure/event-hubs consumer: what an IoT Hub
// consumer (Azure Function, long-running reader) sees must be what it sees here.

interface Seen {
  partitionId: string;
  sequenceNumber: number;
  offset: string;
  source: unknown;
  deviceId: unknown;
  opType: unknown;
  body: unknown;
  properties: Record<string, unknown>;
}

function collect(client: EventHubConsumerClient, seen: Seen[], start: Record<string, { sequenceNumber: number }> | 'earliest', checkpoints?: Map<string, Checkpoint>): Subscription {
  const handlers = {
    processEvents: (events: ReceivedEventData[], context: PartitionContext): Promise<void> => {
      for (const event of events) {
        seen.push({
          partitionId: context.partitionId,
          sequenceNumber: event.sequenceNumber,
          offset: String(event.offset),
          source: event.systemProperties?.['iothub-message-source'],
          deviceId: event.systemProperties?.['iothub-connection-device-id'],
          opType: event.properties?.opType,
          body: event.body,
          properties: event.properties ?? {},
        });
        checkpoints?.set(context.partitionId, {
          consumerGroup: context.consumerGroup, eventHubName: context.eventHubName, fullyQualifiedNamespace: context.fullyQualifiedNamespace,
          partitionId: context.partitionId, sequenceNumber: event.sequenceNumber, offset: String(event.offset),
        });
      }
      return Promise.resolve();
    },
    processError: (): Promise<void> => Promise.resolve(),
  };
  const startPosition = start === 'earliest'
    ? { offset: '-1' }
    : Object.fromEntries(Object.entries(start).map(([p, c]) => [p, { sequenceNumber: c.sequenceNumber, isInclusive: false }]));
  return client.subscribe(handlers, { startPosition: startPosition as never, maxWaitTimeInSeconds: 1 });
}

describe('Event Hubs-compatible endpoint (real @azure/event-hubs client over AMQP/TLS)', () => {
  let hub: EmulatorFixture;
  const clients: EventHubConsumerClient[] = [];
  beforeAll(async () => {
    hub = await startEmulator();
  });
  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await hub?.stop();
  });
  const consumer = (): EventHubConsumerClient => {
    const client = new EventHubConsumerClient('$Default', hub.hubProcess.info.eventHubsConnectionString);
    clients.push(client);
    return client;
  };

  it('describes the hub and its partitions through $management', async () => {
    const client = consumer();
    const properties = await client.getEventHubProperties();
    expect(properties.name).toBe(hub.hubProcess.info.hubName);
    expect(properties.partitionIds).toEqual(['0', '1', '2', '3']);
    const partition = await client.getPartitionProperties('0');
    expect(partition.partitionId).toBe('0');
    expect(typeof partition.isEmpty).toBe('boolean');
  });

  it('delivers lifecycle notifications and telemetry with IoT Hub annotations, and resumes from a checkpoint', async () => {
    const devices = ['eh-a', 'eh-b', 'eh-c', 'eh-d', 'eh-e', 'eh-f'];
    const keys = new Map<string, string>();
    for (const id of devices) keys.set(id, (await hub.createDevice(id)).key);
    const sender = await hub.openDevice('eh-a', keys.get('eh-a')!);
    const telemetry = new Message(JSON.stringify({ temperature: 21 }));
    telemetry.properties.add('kind', 'reading');
    telemetry.contentType = 'application/json';
    telemetry.contentEncoding = 'utf-8';
    await sender.sendEvent(telemetry);

    const client = consumer();
    const seen: Seen[] = [];
    const checkpoints = new Map<string, Checkpoint>();
    const first = collect(client, seen, 'earliest', checkpoints);
    await eventually(() => (devices.every((d) => seen.some((s) => s.deviceId === d && s.opType === 'createDeviceIdentity'))
      && seen.some((s) => s.source === 'Telemetry') ? true : undefined), 20_000, 'lifecycle and telemetry events');
    await first.close();

    const created = seen.find((s) => s.deviceId === 'eh-b' && s.opType === 'createDeviceIdentity')!;
    expect(created.source).toBe('deviceLifecycleEvents');
    expect((created.body as { deviceId: string }).deviceId).toBe('eh-b');
    expect(created.properties.hubName).toBe(hub.hubProcess.info.hubName);
    const reading = seen.find((s) => s.source === 'Telemetry')!;
    expect(reading.deviceId).toBe('eh-a');
    expect(reading.properties.kind).toBe('reading');
    expect(reading.body).toEqual({ temperature: 21 });
    // Six devices hash over more than one partition, and each partition counts from 0 in order.
    const partitions = new Set(seen.map((s) => s.partitionId));
    expect(partitions.size).toBeGreaterThanOrEqual(2);
    for (const p of partitions) {
      const numbers = seen.filter((s) => s.partitionId === p).map((s) => s.sequenceNumber);
      expect(numbers).toEqual(numbers.map((_, i) => i));
    }

    // Resume: a second reader starting after the checkpoints sees only what came later.
    await hub.createDevice('eh-late');
    const later: Seen[] = [];
    const resumed = collect(consumer(), later, Object.fromEntries([...checkpoints].map(([p, c]) => [p, { sequenceNumber: c.sequenceNumber }])));
    const all = ['0', '1', '2', '3'];
    const fromStart = all.filter((p) => !checkpoints.has(p));
    await eventually(() => (later.some((s) => s.deviceId === 'eh-late') ? true : undefined), 20_000, 'event after the checkpoint');
    await resumed.close();
    const repeated = later.filter((s) => checkpoints.has(s.partitionId) && s.sequenceNumber <= checkpoints.get(s.partitionId)!.sequenceNumber);
    expect(repeated).toEqual([]);
    expect(fromStart.length).toBeLessThan(all.length);
  });

  it('refuses a client holding a wrong key', async () => {
    const wrong = hub.hubProcess.info.eventHubsConnectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${Buffer.alloc(32, 1).toString('base64')}`);
    const client = new EventHubConsumerClient('$Default', wrong, { retryOptions: { maxRetries: 0, timeoutInMs: 5_000 } });
    clients.push(client);
    await expect(client.getEventHubProperties()).rejects.toThrow();
  });
});
