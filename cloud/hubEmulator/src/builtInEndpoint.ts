import Database from 'better-sqlite3';
import { StatementCache } from './statementCache.ts';
import { checkpointInBackground } from '@edge-ota/common';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';

// IoT Hub's built-in events endpoint: an append-only, partitioned log of everything that reaches the cloud
// (device telemetry, device lifecycle notifications and connection-state events), persisted so cloud
// consumers (Event Grid delivery, an Event Hubs reader) can resume from an offset after a restart.

export type CloudEventSource = 'Telemetry' | 'deviceLifecycleEvents' | 'deviceConnectionStateEvents';

export interface CloudEvent {
  /** Global order of arrival. */
  readonly sequence: number;
  readonly partition: number;
  /** Order within the partition (Event Hubs' sequenceNumber). */
  readonly partitionSequence: number;
  readonly source: CloudEventSource;
  readonly deviceId: string;
  readonly moduleId: string | undefined;
  readonly enqueuedTime: string;
  readonly body: Buffer;
  readonly properties: Readonly<Record<string, string>>;
  readonly systemProperties: Readonly<Record<string, string>>;
}

export type NewCloudEvent = Omit<CloudEvent, 'sequence' | 'partition' | 'partitionSequence' | 'enqueuedTime'>;

interface EventRow {
  sequence: number;
  partition: number;
  partition_sequence: number;
  source: CloudEventSource;
  device_id: string;
  module_id: string | null;
  enqueued_time: string;
  body: Buffer;
  properties: string;
  system_properties: string;
}

export const partitionCount = 4;

export function partitionFor(deviceId: string): number {
  return createHash('sha256').update(deviceId).digest().readUInt32BE(0) % partitionCount;
}

export class BuiltInEndpoint extends EventEmitter<{ event: [CloudEvent] }> {
  readonly #db: Database.Database;
  readonly #checkpoints: { close(): void };
  readonly #statements: StatementCache;

  constructor(file: string) {
    super();
    this.#db = new Database(file);
    this.#statements = new StatementCache(this.#db);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#checkpoints = checkpointInBackground(this.#db, file);
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS events (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        partition INTEGER NOT NULL,
        partition_sequence INTEGER NOT NULL,
        source TEXT NOT NULL,
        device_id TEXT NOT NULL,
        module_id TEXT,
        enqueued_time TEXT NOT NULL,
        body BLOB NOT NULL,
        properties TEXT NOT NULL,
        system_properties TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS events_by_partition ON events (partition, partition_sequence);
    `);
  }

  #prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): Database.Statement<P, R> {
    return this.#statements.prepare<P, R>(sql);
  }

  close(): void {
    this.#db.close();
    this.#checkpoints.close();
  }

  append(input: NewCloudEvent): CloudEvent {
    const partition = partitionFor(input.deviceId);
    const enqueuedTime = new Date().toISOString();
    const insert = this.#db.transaction(() => {
      const last = this.#prepare<[number], { n: number | null }>('SELECT MAX(partition_sequence) AS n FROM events WHERE partition = ?')
        .get(partition);
      const partitionSequence = (last?.n ?? -1) + 1;
      const systemProperties = {
        ...input.systemProperties,
        'iothub-enqueuedtime': enqueuedTime,
        'iothub-message-source': input.source,
        'iothub-connection-device-id': input.deviceId,
        ...(input.moduleId ? { 'iothub-connection-module-id': input.moduleId } : {}),
      };
      const result = this.#prepare(
          `INSERT INTO events (partition, partition_sequence, source, device_id, module_id, enqueued_time, body, properties, system_properties)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(partition, partitionSequence, input.source, input.deviceId, input.moduleId ?? null, enqueuedTime, input.body,
          JSON.stringify(input.properties), JSON.stringify(systemProperties));
      return { sequence: Number(result.lastInsertRowid), partitionSequence, systemProperties };
    });
    const { sequence, partitionSequence, systemProperties } = insert();
    const event: CloudEvent = { ...input, sequence, partition, partitionSequence, enqueuedTime, systemProperties };
    this.emit('event', event);
    return event;
  }

  /** Events after a global sequence number, oldest first. */
  readAfter(sequence: number, limit = 500): CloudEvent[] {
    return this.#prepare<[number, number], EventRow>('SELECT * FROM events WHERE sequence > ? ORDER BY sequence LIMIT ?')
      .all(sequence, limit)
      .map(toEvent);
  }

  /** Events of one partition from a partition sequence number on (inclusive), oldest first. */
  readPartition(partition: number, fromPartitionSequence: number, limit = 500): CloudEvent[] {
    return this.#prepare<[number, number, number], EventRow>(
        'SELECT * FROM events WHERE partition = ? AND partition_sequence >= ? ORDER BY partition_sequence LIMIT ?',
      )
      .all(partition, fromPartitionSequence, limit)
      .map(toEvent);
  }

  lastSequence(): number {
    return this.#prepare<[], { n: number | null }>('SELECT MAX(sequence) AS n FROM events').get()?.n ?? 0;
  }
}

function toEvent(row: EventRow): CloudEvent {
  return {
    sequence: row.sequence,
    partition: row.partition,
    partitionSequence: row.partition_sequence,
    source: row.source,
    deviceId: row.device_id,
    moduleId: row.module_id ?? undefined,
    enqueuedTime: row.enqueued_time,
    body: row.body,
    properties: JSON.parse(row.properties) as Record<string, string>,
    systemProperties: JSON.parse(row.system_properties) as Record<string, string>,
  };
}
