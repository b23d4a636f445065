import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import iothub from 'azure-iothub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HubProcess } from '@edge-ota/hub-emulator';
import { startHubProcess } from '@edge-ota/hub-emulator';
import { EventHubsAdapter } from '../src/eventHubsAdapter.ts';
import type { EventIngestion, HubEvent, IngestResult } from '../src/eventIngestion.ts';
import { SqliteStore } from '../src/sqliteStore.ts';
import { eventually } from './support/harness.ts';

const { Registry } = iothub;

// The Event Hubs adapter with the real @azure/event-hubs consumer against the emulator's built-in endpoint:
// lifecycle events map to the core's vocabulary, and a new adapter on the same SQLite store resumes after the
// checkpoints of the previous one instead of reading the log again.

class RecordingIngestion {
  readonly events: HubEvent[] = [];
  ingest(event: HubEvent): Promise<IngestResult> {
    this.events.push(event);
    return Promise.resolve({ result: 'applied' });
  }
}

describe('EventHubsAdapter and its SQLite checkpoint store', () => {
  let hub: HubProcess;
  let dir: string;
  beforeAll(async () => {
    hub = await startHubProcess({ caDir: process.env.EDGE_OTA_TEST_CA_DIR! });
    dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-eh-'));
  });
  afterAll(async () => {
    await hub?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads lifecycle events and resumes from its checkpoints after a restart', async () => {
    const registry = Registry.fromConnectionString(hub.info.serviceConnectionString);
    const first = ['cp-1', 'cp-2', 'cp-3', 'cp-4', 'cp-5', 'cp-6'];
    for (const deviceId of first) await registry.create({ deviceId, capabilities: { iotEdge: deviceId === 'cp-1' } });
    const store = new SqliteStore(path.join(dir, 'store.sqlite'));
    const seen1 = new RecordingIngestion();
    const adapter1 = new EventHubsAdapter({ connectionString: hub.info.eventHubsConnectionString, store, ingestion: seen1 as unknown as EventIngestion });
    adapter1.start();
    // Ready once every partition is being read (what createDispatcher waits for before it reports ready).
    expect(await adapter1.ready(30_000)).toBe(true);
    await eventually(() => (first.every((id) => seen1.events.some((e) => e.deviceId === id)) ? true : undefined), 30_000, 'first six lifecycle events');
    // Checkpoints are written after each batch; partitions count from 0, so all six are covered when the
    // checkpointed sequence numbers (+1 each) add up to six.
    await eventually(() => (store.listCheckpoints(hub.info.hostName, hub.info.hubName, '$Default')
      .reduce((sum, c) => sum + c.sequenceNumber + 1, 0) === first.length ? true : undefined), 10_000, 'checkpoints for all six events');
    await adapter1.stop();
    const created = seen1.events.find((e) => e.deviceId === 'cp-1');
    expect(created).toMatchObject({ kind: 'lifecycle', opType: 'createDeviceIdentity', moduleId: undefined });
    expect((created as Extract<HubEvent, { kind: 'lifecycle' }>).twin).toMatchObject({ deviceId: 'cp-1', capabilities: { iotEdge: true } });
    expect(Number.isNaN(Date.parse(created!.enqueuedTime))).toBe(false);

    await registry.create({ deviceId: 'cp-late' });
    const seen2 = new RecordingIngestion();
    const adapter2 = new EventHubsAdapter({ connectionString: hub.info.eventHubsConnectionString, store, ingestion: seen2 as unknown as EventIngestion });
    adapter2.start();
    await eventually(() => (seen2.events.some((e) => e.deviceId === 'cp-late') ? true : undefined), 30_000, 'event after the restart');
    await adapter2.stop();
    // Nothing read before the checkpoints came again.
    expect(seen2.events.filter((e) => first.includes(e.deviceId))).toEqual([]);
    store.close();
  }, 90_000);
});
