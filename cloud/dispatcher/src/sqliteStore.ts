import Database from 'better-sqlite3';
import type { FeedbackMessage } from '@edge-ota/common';
import { checkpointInBackground, formatUpdateId, isTerminalFeedback } from '@edge-ota/common';
import type {
  CatalogUpdate, CheckpointRecord, DeliveryRecord, DeviceRecord, DispatcherStore, FeedbackOutcome, HistoryEntry, JobOrigin, JobStatus, OwnershipRecord,
} from './store.ts';

// The embedded store: one SQLite file in WAL mode. Schema changes are numbered migrations applied in order
// inside a transaction, so an old data directory is upgraded in place at start-up.

export const migrations: readonly string[] = [
  `CREATE TABLE devices (
     device_id TEXT PRIMARY KEY,
     parent_id TEXT,
     is_gateway INTEGER NOT NULL,
     group_name TEXT,
     tags TEXT NOT NULL,
     assigned_update TEXT,
     lifecycle TEXT NOT NULL,
     lifecycle_at TEXT,
     installed_version TEXT,
     created_at TEXT NOT NULL
   );
   CREATE INDEX devices_by_group ON devices (group_name);
   CREATE TABLE group_rules (group_name TEXT PRIMARY KEY, update_id TEXT NOT NULL);
   CREATE TABLE updates (
     update_id TEXT PRIMARY KEY,
     provider TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
     import_manifest TEXT NOT NULL,
     files TEXT NOT NULL,
     source TEXT NOT NULL,
     imported_at TEXT NOT NULL
   );
   -- One row per (device, update) deployment: the delivery work and the job's progress reported back.
   CREATE TABLE jobs (
     job_id TEXT PRIMARY KEY,
     device_id TEXT NOT NULL,
     gateway_id TEXT NOT NULL,
     update_id TEXT NOT NULL,
     delivery_state TEXT NOT NULL,
     payload TEXT NOT NULL,
     twin_payload TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER NOT NULL,
     twin_written INTEGER NOT NULL DEFAULT 0,
     last_error TEXT,
     created_at TEXT NOT NULL,
     delivered_at TEXT,
     state TEXT NOT NULL,
     step TEXT,
     status TEXT,
     last_sequence INTEGER NOT NULL DEFAULT -1,
     result_code INTEGER,
     extended_result_code INTEGER,
     result_details TEXT,
     terminal INTEGER NOT NULL DEFAULT 0,
     updated_at TEXT
   );
   CREATE INDEX jobs_due ON jobs (delivery_state, next_attempt_at);
   CREATE INDEX jobs_by_device ON jobs (device_id, created_at);
   CREATE INDEX jobs_by_gateway ON jobs (gateway_id, delivery_state);
   CREATE TABLE history (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     device_id TEXT NOT NULL,
     job_id TEXT,
     at TEXT NOT NULL,
     kind TEXT NOT NULL,
     step TEXT,
     status TEXT NOT NULL,
     result_code INTEGER,
     extended_result_code INTEGER,
     details TEXT
   );
   CREATE INDEX history_by_device ON history (device_id, id);
   CREATE TABLE seen_events (event_id TEXT PRIMARY KEY, at TEXT NOT NULL);
   CREATE TABLE checkpoints (
     namespace TEXT NOT NULL, event_hub TEXT NOT NULL, consumer_group TEXT NOT NULL, partition_id TEXT NOT NULL,
     offset TEXT NOT NULL, sequence_number INTEGER NOT NULL,
     PRIMARY KEY (namespace, event_hub, consumer_group, partition_id)
   );
   CREATE TABLE ownership (
     namespace TEXT NOT NULL, event_hub TEXT NOT NULL, consumer_group TEXT NOT NULL, partition_id TEXT NOT NULL,
     owner_id TEXT NOT NULL, etag TEXT NOT NULL, last_modified INTEGER NOT NULL,
     PRIMARY KEY (namespace, event_hub, consumer_group, partition_id)
   );`,
  // 2: jobs the dispatcher did not create (an orchestrator ran them offline and reported them later). Such a job
  // has no delivery: delivery_state 'none', empty payloads.
  `ALTER TABLE jobs ADD COLUMN origin TEXT NOT NULL DEFAULT 'dispatched';`,
  // 3: write less per commit (measured with the dispatch bench). The signed payloads (a few KB, written once) move
  // out of the jobs row, so the job's updates (attempts, feedback) no longer rewrite them; a twin payload equal to
  // the method payload (the usual case) is not stored twice. Seen events are a WITHOUT ROWID table (one B-tree
  // instead of a table and its key index), and history ids are plain rowids (AUTOINCREMENT wrote sqlite_sequence on
  // every insert; ids still grow with every insert, so ORDER BY id stays the order of arrival).
  `CREATE TABLE job_payloads (job_id TEXT PRIMARY KEY, payload TEXT NOT NULL, twin_payload TEXT);
   INSERT INTO job_payloads (job_id, payload, twin_payload)
     SELECT job_id, payload, CASE WHEN twin_payload = payload THEN NULL ELSE twin_payload END FROM jobs WHERE origin = 'dispatched';
   ALTER TABLE jobs DROP COLUMN payload;
   ALTER TABLE jobs DROP COLUMN twin_payload;
   CREATE TABLE seen_events_v3 (event_id TEXT PRIMARY KEY, at TEXT NOT NULL) WITHOUT ROWID;
   INSERT INTO seen_events_v3 SELECT event_id, at FROM seen_events;
   DROP TABLE seen_events;
   ALTER TABLE seen_events_v3 RENAME TO seen_events;
   CREATE TABLE history_v3 (
     id INTEGER PRIMARY KEY,
     device_id TEXT NOT NULL,
     job_id TEXT,
     at TEXT NOT NULL,
     kind TEXT NOT NULL,
     step TEXT,
     status TEXT NOT NULL,
     result_code INTEGER,
     extended_result_code INTEGER,
     details TEXT
   );
   INSERT INTO history_v3 SELECT id, device_id, job_id, at, kind, step, status, result_code, extended_result_code, details FROM history;
   DROP TABLE history;
   ALTER TABLE history_v3 RENAME TO history;
   CREATE INDEX history_by_device ON history (device_id, id);`,
  // 4: due deliveries in the index's order (job_id included), so the queue's look for due work reads only the
  // rows it takes instead of sorting every due delivery in a temporary B-tree (a backlog made that the store's
  // most expensive query in the dispatch bench).
  `DROP INDEX jobs_due;
   CREATE INDEX jobs_due ON jobs (delivery_state, next_attempt_at, job_id);`,
  // 5: reassignments are counted, so a device can be given an update again (or an older one) as a new job.
  `ALTER TABLE devices ADD COLUMN assignment_revision INTEGER NOT NULL DEFAULT 0;`,
];

interface DeviceRow {
  device_id: string; parent_id: string | null; is_gateway: number; group_name: string | null; tags: string;
  assigned_update: string | null; lifecycle: DeviceRecord['lifecycle']; lifecycle_at: string | null; installed_version: string | null; created_at: string;
  assignment_revision: number;
}
interface UpdateRow { update_id: string; provider: string; name: string; version: string; import_manifest: string; files: string; source: CatalogUpdate['source']; imported_at: string }
interface JobRow {
  job_id: string; device_id: string; gateway_id: string; update_id: string; delivery_state: DeliveryRecord['state'];
  attempts: number; next_attempt_at: number; twin_written: number; last_error: string | null; created_at: string; delivered_at: string | null;
  state: string; step: string | null; status: string | null; last_sequence: number; result_code: number | null; extended_result_code: number | null;
  result_details: string | null; terminal: number; updated_at: string | null; origin: JobOrigin;
}

const toDevice = (r: DeviceRow): DeviceRecord => ({
  deviceId: r.device_id, parentId: r.parent_id ?? undefined, isGateway: r.is_gateway === 1, group: r.group_name ?? undefined,
  tags: JSON.parse(r.tags) as Record<string, string>, assignedUpdateId: r.assigned_update ?? undefined, lifecycle: r.lifecycle,
  lifecycleAt: r.lifecycle_at ?? undefined, installedVersion: r.installed_version ?? undefined, createdAt: r.created_at,
  assignmentRevision: r.assignment_revision,
});
const toUpdate = (r: UpdateRow): CatalogUpdate => ({
  updateId: r.update_id, provider: r.provider, name: r.name, version: r.version, importManifest: JSON.parse(r.import_manifest) as CatalogUpdate['importManifest'],
  files: JSON.parse(r.files) as CatalogUpdate['files'], source: r.source, importedAt: r.imported_at,
});
/** A dispatched job's row joined with its payloads (DELIVERY_SELECT). */
type DeliveryRow = JobRow & { payload: string; twin_payload: string | null };
const DELIVERY_SELECT = 'SELECT j.*, p.payload, p.twin_payload FROM jobs j JOIN job_payloads p ON p.job_id = j.job_id';

const toDelivery = (r: DeliveryRow): DeliveryRecord => ({
  jobId: r.job_id, deviceId: r.device_id, gatewayId: r.gateway_id, updateId: r.update_id, state: r.delivery_state, payload: r.payload,
  twinPayload: r.twin_payload ?? r.payload, attempts: r.attempts, nextAttemptAt: r.next_attempt_at, twinWritten: r.twin_written === 1,
  lastError: r.last_error ?? undefined, createdAt: r.created_at, deliveredAt: r.delivered_at ?? undefined,
});
const toJob = (r: JobRow): JobStatus => ({
  jobId: r.job_id, deviceId: r.device_id, updateId: r.update_id, origin: r.origin, step: r.step ?? undefined, status: r.status ?? r.state, lastSequence: r.last_sequence,
  resultCode: r.result_code ?? undefined, extendedResultCode: r.extended_result_code ?? undefined, resultDetails: r.result_details ?? undefined,
  terminal: r.terminal === 1, updatedAt: r.updated_at ?? undefined,
});

/** What applying feedback reads of a job. */
type FeedbackJobRow = Pick<JobRow, 'device_id' | 'last_sequence' | 'terminal' | 'origin'>;
const FEEDBACK_JOB_SELECT = 'SELECT device_id, last_sequence, terminal, origin FROM jobs WHERE job_id = ?';

/** The job state the views count: where the deployment is from the fleet's point of view. */
function jobStateFor(message: FeedbackMessage): string {
  if (isTerminalFeedback(message)) return message.status === 'succeeded' ? 'succeeded' : message.status === 'cancelled' ? 'cancelled' : 'failed';
  return 'inProgress';
}

export interface SqliteStoreOptions {
  durability?: 'normal' | 'full';
  /** Checkpoint in a worker thread (default) instead of inside commits on the event loop. */
  backgroundCheckpoints?: boolean;
  checkpointIntervalMs?: number;
}

export class SqliteStore implements DispatcherStore {
  readonly #db: Database.Database;
  /** Prepared once per SQL text: preparing on every call was a visible share of the dispatch bench's CPU. */
  readonly #statements = new Map<string, Database.Statement>();

  #sql<P extends unknown[] = unknown[], R = unknown>(sql: string): Database.Statement<P, R> {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement as unknown as Database.Statement<P, R>;
  }

  readonly #checkpointer: { close(): void } | undefined;

  constructor(file: string, options: SqliteStoreOptions = {}) {
    this.#db = new Database(file);
    this.#db.pragma('journal_mode = WAL');
    // NORMAL in WAL mode: a commit survives the process being killed at any point (what "recorded before it is
    // attempted" needs); only a power cut can lose the last commits. FULL costs an fsync per commit, a tenfold
    // throughput loss on this disk (measured with the dispatch bench); pass `durability: 'full'` to get it.
    const synchronous = options.durability === 'full' ? 'FULL' : 'NORMAL';
    this.#db.pragma(`synchronous = ${synchronous}`);
    this.#db.pragma('busy_timeout = 5000');
    this.#migrate();
    // Checkpoints off the event loop (see @edge-ota/common's checkpointInBackground).
    if (options.backgroundCheckpoints ?? true) {
      this.#checkpointer = checkpointInBackground(this.#db, file, { synchronous, ...(options.checkpointIntervalMs ? { intervalMs: options.checkpointIntervalMs } : {}) });
    }
  }

  #migrate(): void {
    this.#db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
    const done = new Set(this.#db.prepare<[], { version: number }>('SELECT version FROM schema_migrations').all().map((r) => r.version));
    migrations.forEach((sql, index) => {
      const version = index + 1;
      if (done.has(version)) return;
      this.#db.transaction(() => {
        this.#db.exec(sql);
        this.#db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(version, new Date().toISOString());
      })();
    });
  }

  get schemaVersion(): number {
    return this.#sql<[], { v: number | null }>('SELECT MAX(version) AS v FROM schema_migrations').get()?.v ?? 0;
  }

  close(): void {
    this.#db.close();
    this.#checkpointer?.close();
  }

  insertDevice(d: DeviceRecord): boolean {
    const result = this.#sql(
      `INSERT OR IGNORE INTO devices (device_id, parent_id, is_gateway, group_name, tags, assigned_update, lifecycle, lifecycle_at, installed_version, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(d.deviceId, d.parentId ?? null, d.isGateway ? 1 : 0, d.group ?? null, JSON.stringify(d.tags), d.assignedUpdateId ?? null, d.lifecycle,
      d.lifecycleAt ?? null, d.installedVersion ?? null, d.createdAt);
    return result.changes === 1;
  }

  getDevice(deviceId: string): DeviceRecord | undefined {
    const row = this.#sql<[string], DeviceRow>('SELECT * FROM devices WHERE device_id = ?').get(deviceId);
    return row ? toDevice(row) : undefined;
  }

  removeDevice(deviceId: string): void {
    this.#db.transaction(() => {
      if (this.#sql<[string], { n: number }>('SELECT COUNT(*) AS n FROM jobs WHERE device_id = ?').get(deviceId)!.n > 0) return;
      this.#sql('DELETE FROM devices WHERE device_id = ?').run(deviceId);
      this.#sql('DELETE FROM history WHERE device_id = ?').run(deviceId);
    })();
  }

  reassignDevice(deviceId: string, assignedUpdateId: string | undefined): DeviceRecord | undefined {
    this.#sql('UPDATE devices SET assigned_update = ?, assignment_revision = assignment_revision + 1 WHERE device_id = ?').run(assignedUpdateId ?? null, deviceId);
    return this.getDevice(deviceId);
  }

  listDevices(options: { group?: string; limit: number; after?: string }): DeviceRecord[] {
    const rows = this.#sql<[string | null, string | null, string, number], DeviceRow>(
      'SELECT * FROM devices WHERE (? IS NULL OR group_name = ?) AND device_id > ? ORDER BY device_id LIMIT ?',
    ).all(options.group ?? null, options.group ?? null, options.after ?? '', options.limit);
    return rows.map(toDevice);
  }

  applyLifecycle(deviceId: string, lifecycle: 'live' | 'deleted', at: string): boolean {
    // A lifecycle event older than the one already applied changes nothing: that is how a delete that
    // overtook its create wins, and how a late duplicate of an old create cannot revive a deleted device.
    const result = this.#sql(
      `UPDATE devices SET lifecycle = ?, lifecycle_at = ?
       WHERE device_id = ? AND (lifecycle_at IS NULL OR lifecycle_at < ? OR (lifecycle_at = ? AND ? = 'deleted'))`,
    ).run(lifecycle, at, deviceId, at, at, lifecycle);
    return result.changes === 1;
  }

  setGroupRule(group: string, updateId: string | undefined): void {
    if (updateId === undefined) this.#sql('DELETE FROM group_rules WHERE group_name = ?').run(group);
    else this.#sql('INSERT INTO group_rules (group_name, update_id) VALUES (?, ?) ON CONFLICT (group_name) DO UPDATE SET update_id = excluded.update_id').run(group, updateId);
  }

  groupRule(group: string): string | undefined {
    return this.#sql<[string], { update_id: string }>('SELECT update_id FROM group_rules WHERE group_name = ?').get(group)?.update_id;
  }

  listGroupRules(): Array<{ group: string; updateId: string }> {
    return this.#sql<[], { group_name: string; update_id: string }>('SELECT * FROM group_rules ORDER BY group_name').all()
      .map((r) => ({ group: r.group_name, updateId: r.update_id }));
  }

  insertUpdates(updates: readonly CatalogUpdate[]): string | undefined {
    // IMMEDIATE takes the write lock before the look-up, so no other connection can insert one of them in between.
    return this.#db.transaction((): string | undefined => {
      const exists = this.#sql<[string], { update_id: string }>('SELECT update_id FROM updates WHERE update_id = ?');
      const present = updates.find((u) => exists.get(u.updateId) !== undefined);
      if (present) return present.updateId;
      const insert = this.#sql(
        `INSERT INTO updates (update_id, provider, name, version, import_manifest, files, source, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      for (const u of updates) insert.run(u.updateId, u.provider, u.name, u.version, JSON.stringify(u.importManifest), JSON.stringify(u.files), u.source, u.importedAt);
      return undefined;
    }).immediate();
  }

  getUpdate(updateId: string): CatalogUpdate | undefined {
    const row = this.#sql<[string], UpdateRow>('SELECT * FROM updates WHERE update_id = ?').get(updateId);
    return row ? toUpdate(row) : undefined;
  }

  listUpdates(): CatalogUpdate[] {
    return this.#sql<[], UpdateRow>('SELECT * FROM updates ORDER BY update_id').all().map(toUpdate);
  }

  insertDelivery(d: DeliveryRecord): boolean {
    // One commit for the row, its payloads and its history entry.
    return this.#db.transaction((): boolean => {
      const result = this.#sql(
        `INSERT OR IGNORE INTO jobs (job_id, device_id, gateway_id, update_id, delivery_state, attempts, next_attempt_at,
           twin_written, last_error, created_at, delivered_at, state)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')`,
      ).run(d.jobId, d.deviceId, d.gatewayId, d.updateId, d.state, d.attempts, d.nextAttemptAt, d.twinWritten ? 1 : 0,
        d.lastError ?? null, d.createdAt, d.deliveredAt ?? null);
      if (result.changes !== 1) return false;
      this.#sql('INSERT INTO job_payloads (job_id, payload, twin_payload) VALUES (?, ?, ?)').run(d.jobId, d.payload, d.twinPayload === d.payload ? null : d.twinPayload);
      this.addHistory(d.deviceId, { at: d.createdAt, jobId: d.jobId, kind: 'delivery', step: undefined, status: 'recorded', resultCode: undefined, extendedResultCode: undefined, details: `${d.updateId} via ${d.gatewayId}/otaOrchestrator` });
      return true;
    })();
  }

  getDelivery(jobId: string): DeliveryRecord | undefined {
    const row = this.#sql<[string], DeliveryRow>(`${DELIVERY_SELECT} WHERE j.job_id = ? AND j.origin = 'dispatched'`).get(jobId);
    return row ? toDelivery(row) : undefined;
  }

  deliveriesFor(deviceId: string): DeliveryRecord[] {
    return this.#sql<[string], DeliveryRow>(`${DELIVERY_SELECT} WHERE j.device_id = ? AND j.origin = 'dispatched' ORDER BY j.created_at, j.job_id`).all(deviceId).map(toDelivery);
  }

  dueDeliveries(now: number, limit: number, skip?: ReadonlySet<string>): DeliveryRecord[] {
    // Ids first (from the index), payloads only for the ones handed out: the queue asks again for its free slots
    // while its own attempts are still in flight, and those it skips.
    const ids = this.#sql<[number, number], { job_id: string }>(
      `SELECT job_id FROM jobs WHERE delivery_state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, job_id LIMIT ?`,
    ).all(now, limit + (skip?.size ?? 0)).map((r) => r.job_id).filter((id) => !skip?.has(id)).slice(0, limit);
    const load = this.#sql<[string], DeliveryRow>(`${DELIVERY_SELECT} WHERE j.job_id = ?`);
    return ids.map((id) => load.get(id)).filter((r): r is DeliveryRow => r !== undefined).map(toDelivery);
  }

  nextDueAt(): number | undefined {
    return this.#sql<[], { n: number | null }>(`SELECT MIN(next_attempt_at) AS n FROM jobs WHERE delivery_state = 'pending'`).get()?.n ?? undefined;
  }

  markAttempt(jobId: string, r: Parameters<DispatcherStore['markAttempt']>[1]): void {
    const now = new Date().toISOString();
    this.#db.transaction(() => {
      const row = this.#sql<[string], Pick<JobRow, 'device_id' | 'delivery_state' | 'terminal' | 'twin_written'>>(
        'SELECT device_id, delivery_state, terminal, twin_written FROM jobs WHERE job_id = ?',
      ).get(jobId);
      if (!row || row.delivery_state !== 'pending') return;
      this.#sql(
        `UPDATE jobs SET attempts = attempts + 1, delivery_state = ?, next_attempt_at = ?, last_error = ?, delivered_at = ?,
           twin_written = MAX(twin_written, ?), state = CASE WHEN ? AND state = 'pending' THEN 'delivered' ELSE state END WHERE job_id = ?`,
      ).run(r.delivered ? 'delivered' : 'pending', r.nextAttemptAt, r.error ?? null, r.delivered ? now : null, r.twinWritten ? 1 : 0, r.delivered ? 1 : 0, jobId);
      if (r.rejected && row.terminal === 0) {
        this.#sql(`UPDATE jobs SET state = 'failed', step = 'manifest', status = 'failed', result_code = ?, extended_result_code = ?, result_details = ?, terminal = 1, updated_at = ? WHERE job_id = ?`)
          .run(r.rejected.resultCode, r.rejected.extendedResultCode, r.rejected.details, now, jobId);
        this.addHistory(row.device_id, { at: now, jobId, kind: 'delivery', step: 'manifest', status: 'rejected', resultCode: r.rejected.resultCode, extendedResultCode: r.rejected.extendedResultCode, details: r.rejected.details });
      }
      if (r.delivered || (r.twinWritten && row.twin_written === 0)) {
        this.addHistory(row.device_id, {
          at: now, jobId, kind: 'delivery', step: undefined, status: r.delivered ? 'delivered' : 'twinWritten',
          resultCode: undefined, extendedResultCode: undefined, details: r.error,
        });
      }
    })();
  }

  cancelPending(deviceId: string, reason: string, keepJobId?: string): Array<{ jobId: string; gatewayId: string; twinWritten: boolean }> {
    return this.#db.transaction(() => {
      const rows = this.#sql<[string, string | null], { job_id: string; gateway_id: string; twin_written: number }>(
        `SELECT job_id, gateway_id, twin_written FROM jobs WHERE device_id = ? AND delivery_state = 'pending' AND job_id IS NOT ?`,
      ).all(deviceId, keepJobId ?? null);
      for (const { job_id } of rows) {
        this.#sql(`UPDATE jobs SET delivery_state = 'cancelled', state = 'cancelled', last_error = ? WHERE job_id = ?`).run(reason, job_id);
        this.addHistory(deviceId, { at: new Date().toISOString(), jobId: job_id, kind: 'delivery', step: undefined, status: 'cancelled', resultCode: undefined, extendedResultCode: undefined, details: reason });
      }
      return rows.map((r) => ({ jobId: r.job_id, gatewayId: r.gateway_id, twinWritten: r.twin_written === 1 }));
    })();
  }

  expediteGateway(gatewayId: string, now: number): number {
    return this.#sql(`UPDATE jobs SET next_attempt_at = ? WHERE gateway_id = ? AND delivery_state = 'pending' AND next_attempt_at > ?`)
      .run(now, gatewayId, now).changes;
  }

  markEventSeen(eventId: string, at: string): boolean {
    return this.#sql('INSERT OR IGNORE INTO seen_events (event_id, at) VALUES (?, ?)').run(eventId, at).changes === 1;
  }

  isEventSeen(eventId: string): boolean {
    return this.#sql<[string], { n: number }>('SELECT COUNT(*) AS n FROM seen_events WHERE event_id = ?').get(eventId)!.n > 0;
  }

  applyFeedback(m: FeedbackMessage, options: { adoptUnknownJob?: boolean } = {}): FeedbackOutcome {
    return this.#db.transaction((): FeedbackOutcome => {
      let row: FeedbackJobRow | undefined = this.#sql<[string], FeedbackJobRow>(FEEDBACK_JOB_SELECT).get(m.jobId);
      if (!row && options.adoptUnknownJob) row = this.#adoptOfflineJob(m);
      if (!row || row.device_id !== m.deviceId) return 'unknown-job';
      if (!this.markEventSeen(`feedback:${m.messageId}`, m.timestamp)) return 'duplicate';
      // An offline job started when its earliest message says, whichever message arrived first.
      if (row.origin === 'offline') {
        this.#sql('UPDATE jobs SET created_at = MIN(created_at, ?) WHERE job_id = ?').run(new Date(m.timestamp).toISOString(), m.jobId);
      }
      // Every message goes to the history; only a newer one (by the job's own sequence) moves the current state,
      // and nothing moves a job out of a terminal state.
      this.addHistory(m.deviceId, {
        at: m.timestamp, jobId: m.jobId, kind: 'feedback', step: m.step, status: m.status, resultCode: m.resultCode,
        extendedResultCode: m.extendedResultCode, details: m.resultDetails,
      });
      if (m.sequence <= row.last_sequence || row.terminal === 1) return 'stale';
      const terminal = isTerminalFeedback(m);
      // A job whose feedback arrives was delivered, whichever path (method or twin) carried it.
      this.#sql(
        `UPDATE jobs SET step = ?, status = ?, last_sequence = ?, result_code = ?, extended_result_code = ?, result_details = ?, terminal = ?,
           state = ?, updated_at = ?, delivery_state = CASE WHEN delivery_state = 'pending' THEN 'delivered' ELSE delivery_state END,
           delivered_at = COALESCE(delivered_at, ?) WHERE job_id = ?`,
      ).run(m.step, m.status, m.sequence, m.resultCode, m.extendedResultCode, m.resultDetails ?? null, terminal ? 1 : 0, jobStateFor(m), m.timestamp,
        new Date().toISOString(), m.jobId);
      if (m.installedVersion && (terminal || m.step === 'run' || m.step === 'rollback')) {
        this.#sql('UPDATE devices SET installed_version = ? WHERE device_id = ?').run(m.installedVersion, m.deviceId);
      }
      return 'applied';
    })();
  }

  /** Records a job an orchestrator ran without the dispatcher, if its device is that gateway or behind it. */
  #adoptOfflineJob(m: FeedbackMessage): FeedbackJobRow | undefined {
    const device = this.#sql<[string], DeviceRow>('SELECT * FROM devices WHERE device_id = ?').get(m.deviceId);
    if (!device || (device.device_id !== m.gatewayId && device.parent_id !== m.gatewayId)) return undefined;
    const updateId = formatUpdateId(m.updateId);
    const startedAt = new Date(m.timestamp).toISOString();
    this.#sql(
      `INSERT INTO jobs (job_id, device_id, gateway_id, update_id, delivery_state, next_attempt_at, created_at, state, origin)
       VALUES (?, ?, ?, ?, 'none', 0, ?, 'inProgress', 'offline')`,
    ).run(m.jobId, m.deviceId, m.gatewayId, updateId, startedAt);
    this.addHistory(m.deviceId, {
      at: new Date().toISOString(), jobId: m.jobId, kind: 'delivery', step: undefined, status: 'offlineJobRecorded', resultCode: undefined, extendedResultCode: undefined,
      details: `${updateId} run by ${m.gatewayId}/otaOrchestrator without the dispatcher (offline); learnt from its feedback`,
    });
    return this.#sql<[string], FeedbackJobRow>(FEEDBACK_JOB_SELECT).get(m.jobId);
  }

  jobStatus(jobId: string): JobStatus | undefined {
    const row = this.#sql<[string], JobRow>('SELECT * FROM jobs WHERE job_id = ?').get(jobId);
    return row ? toJob(row) : undefined;
  }

  jobsFor(deviceId: string): JobStatus[] {
    return this.#sql<[string], JobRow>('SELECT * FROM jobs WHERE device_id = ? ORDER BY created_at, job_id').all(deviceId).map(toJob);
  }

  history(deviceId: string, limit: number): HistoryEntry[] {
    return this.#sql<[string, number], { at: string; job_id: string | null; kind: HistoryEntry['kind']; step: string | null; status: string; result_code: number | null; extended_result_code: number | null; details: string | null }>(
      'SELECT * FROM history WHERE device_id = ? ORDER BY id LIMIT ?',
    ).all(deviceId, limit).map((r) => ({
      at: r.at, jobId: r.job_id ?? undefined, kind: r.kind, step: r.step ?? undefined, status: r.status, resultCode: r.result_code ?? undefined,
      extendedResultCode: r.extended_result_code ?? undefined, details: r.details ?? undefined,
    }));
  }

  addHistory(deviceId: string, e: HistoryEntry): void {
    this.#sql('INSERT INTO history (device_id, job_id, at, kind, step, status, result_code, extended_result_code, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(deviceId, e.jobId ?? null, e.at, e.kind, e.step ?? null, e.status, e.resultCode ?? null, e.extendedResultCode ?? null, e.details ?? null);
  }

  countsByUpdate(): Array<{ updateId: string; state: string; count: number }> {
    return this.#sql<[], { update_id: string; state: string; count: number }>(
      'SELECT update_id, state, COUNT(*) AS count FROM jobs GROUP BY update_id, state ORDER BY update_id, state',
    ).all().map((r) => ({ updateId: r.update_id, state: r.state, count: r.count }));
  }

  countsByGroup(): Array<{ group: string; state: string; count: number }> {
    // A device counts once, with its latest job's state.
    return this.#sql<[], { group_name: string; state: string; count: number }>(
      `SELECT d.group_name, j.state, COUNT(*) AS count FROM devices d
         JOIN jobs j ON j.job_id = (SELECT job_id FROM jobs WHERE device_id = d.device_id ORDER BY created_at DESC, job_id DESC LIMIT 1)
       WHERE d.group_name IS NOT NULL GROUP BY d.group_name, j.state ORDER BY d.group_name, j.state`,
    ).all().map((r) => ({ group: r.group_name, state: r.state, count: r.count }));
  }

  failedDevices(limit: number): ReturnType<DispatcherStore['failedDevices']> {
    return this.#sql<[number], JobRow>(`SELECT * FROM jobs WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?`).all(limit).map((r) => {
      // The job's last message is `job failed`; the failing step is the last non-job step that failed.
      const failing = this.#sql<[string], { step: string | null; result_code: number | null; extended_result_code: number | null; details: string | null }>(
        `SELECT step, result_code, extended_result_code, details FROM history WHERE job_id = ? AND kind = 'feedback' AND status IN ('failed', 'rolledBack') AND step != 'job' ORDER BY id DESC LIMIT 1`,
      ).get(r.job_id);
      return {
        deviceId: r.device_id, jobId: r.job_id, updateId: r.update_id, step: failing?.step ?? r.step ?? undefined,
        resultCode: failing?.result_code ?? r.result_code ?? undefined, extendedResultCode: failing?.extended_result_code ?? r.extended_result_code ?? undefined,
        resultDetails: failing?.details ?? r.result_details ?? undefined, at: r.updated_at ?? undefined,
      };
    });
  }

  listCheckpoints(namespace: string, eventHub: string, consumerGroup: string): CheckpointRecord[] {
    return this.#sql<[string, string, string], { partition_id: string; offset: string; sequence_number: number }>(
      'SELECT partition_id, offset, sequence_number FROM checkpoints WHERE namespace = ? AND event_hub = ? AND consumer_group = ? ORDER BY partition_id',
    ).all(namespace, eventHub, consumerGroup).map((r) => ({
      fullyQualifiedNamespace: namespace, eventHubName: eventHub, consumerGroup, partitionId: r.partition_id, offset: r.offset, sequenceNumber: r.sequence_number,
    }));
  }

  saveCheckpoint(c: CheckpointRecord): void {
    this.#sql(
      `INSERT INTO checkpoints (namespace, event_hub, consumer_group, partition_id, offset, sequence_number) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (namespace, event_hub, consumer_group, partition_id) DO UPDATE SET offset = excluded.offset, sequence_number = excluded.sequence_number`,
    ).run(c.fullyQualifiedNamespace, c.eventHubName, c.consumerGroup, c.partitionId, c.offset, c.sequenceNumber);
  }

  listOwnership(namespace: string, eventHub: string, consumerGroup: string): OwnershipRecord[] {
    return this.#sql<[string, string, string], { partition_id: string; owner_id: string; etag: string; last_modified: number }>(
      'SELECT partition_id, owner_id, etag, last_modified FROM ownership WHERE namespace = ? AND event_hub = ? AND consumer_group = ? ORDER BY partition_id',
    ).all(namespace, eventHub, consumerGroup).map((r) => ({
      fullyQualifiedNamespace: namespace, eventHubName: eventHub, consumerGroup, partitionId: r.partition_id, ownerId: r.owner_id, etag: r.etag, lastModifiedTimeInMs: r.last_modified,
    }));
  }

  claimOwnership(claim: OwnershipRecord, expectedEtag: string | undefined): OwnershipRecord | undefined {
    return this.#db.transaction(() => {
      const current = this.#sql<[string, string, string, string], { etag: string }>(
        'SELECT etag FROM ownership WHERE namespace = ? AND event_hub = ? AND consumer_group = ? AND partition_id = ?',
      ).get(claim.fullyQualifiedNamespace, claim.eventHubName, claim.consumerGroup, claim.partitionId);
      if (current && current.etag !== expectedEtag) return undefined;
      this.#sql(
        `INSERT INTO ownership (namespace, event_hub, consumer_group, partition_id, owner_id, etag, last_modified) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (namespace, event_hub, consumer_group, partition_id) DO UPDATE SET owner_id = excluded.owner_id, etag = excluded.etag, last_modified = excluded.last_modified`,
      ).run(claim.fullyQualifiedNamespace, claim.eventHubName, claim.consumerGroup, claim.partitionId, claim.ownerId, claim.etag, claim.lastModifiedTimeInMs);
      return claim;
    })();
  }
}
