import Database from 'better-sqlite3';
import type { FeedbackMessage, FeedbackStatus, FeedbackStep, UpdateDelivery, UpdateId } from '@edge-ota/common';
import { FEEDBACK_SCHEMA, feedbackMessageId } from '@edge-ota/common';
import type { JobState } from './jobStates.ts';
import { terminalStates } from './jobStates.ts';

// The orchestrator's journal, in SQLite (WAL) on the module's state volume. Every state change of a job and the
// feedback it produces are committed in one transaction, before the action they lead to runs: a crash can lose
// an action in flight, never a record of one that finished, and never a feedback message.

export type JobSource = 'method' | 'twin' | 'usb';

export interface UpdateJob {
  jobId: string;
  gatewayId: string;
  targetId: string;
  state: JobState;
  delivery: UpdateDelivery;
  updateId: UpdateId;
  manifestId: string | undefined;
  source: JobSource;
  /** How often each state has been entered (the re-entry cap). */
  stateEntries: Partial<Record<JobState, number>>;
  cancelRequested: boolean;
  resultCode: number | undefined;
  extendedResultCode: number | undefined;
  resultDetails: string | undefined;
  installedVersion: string | undefined;
  createdAt: string;
  updatedAt: string;
}

export interface FeedbackDraft {
  step: FeedbackStep;
  status: FeedbackStatus;
  resultCode: number;
  extendedResultCode: number;
  resultDetails?: string | undefined;
  progress?: FeedbackMessage['progress'];
  installedVersion?: string | undefined;
}

export type StepPhase = 'install' | 'apply' | 'run' | 'confirmBoot' | 'healthCheck' | 'commit' | 'rollback';
/**
 * `started` without `done` means the phase was interrupted (the process died in it). `failed` is the handler's
 * own verdict, recorded before the job's state changes, so a restart keeps the verdict instead of running the
 * step again.
 */
export type StepPhaseStatus = 'none' | 'started' | 'done' | 'skipped' | 'failed';

/** Why a step's phase failed, as the handler said. */
export interface StepFailure {
  code: string;
  message: string;
}

export interface FileProgress {
  fileId: string;
  doneBytes: number;
  verified: boolean;
}

export interface OutboxEntry {
  seq: number;
  message: FeedbackMessage;
}

export interface TargetRecord {
  targetId: string;
  updateId: UpdateId;
  version: string;
  installedAt: string;
  /** 'cloud' or 'usb': how the installed update arrived; usb installs are reported once the cloud is back. */
  source: JobSource;
}

interface JobRow {
  job_id: string;
  gateway_id: string;
  target_id: string;
  state: JobState;
  delivery: string;
  update_id: string;
  manifest_id: string | null;
  source: JobSource;
  state_entries: string;
  cancel_requested: number;
  result_code: number | null;
  extended_result_code: number | null;
  result_details: string | null;
  installed_version: string | null;
  created_at: string;
  updated_at: string;
}

const terminalList = [...terminalStates].map((s) => `'${s}'`).join(',');

export class JobStore {
  readonly #db: Database.Database;
  readonly #now: () => Date;

  constructor(file: string, now: () => Date = () => new Date()) {
    this.#now = now;
    this.#db = new Database(file);
    this.#db.pragma('journal_mode = WAL');
    // FULL: a committed state change must survive power loss, not only a process crash.
    this.#db.pragma('synchronous = FULL');
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY,
        gateway_id TEXT NOT NULL,
        target_id TEXT NOT NULL,
        state TEXT NOT NULL,
        delivery TEXT NOT NULL,
        update_id TEXT NOT NULL,
        manifest_id TEXT,
        source TEXT NOT NULL,
        sequence INTEGER NOT NULL DEFAULT 0,
        state_entries TEXT NOT NULL DEFAULT '{}',
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        result_code INTEGER,
        extended_result_code INTEGER,
        result_details TEXT,
        installed_version TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      );
      -- A manifest may serve several targets (one bundle for every MCU of a model), but each target only once.
      CREATE UNIQUE INDEX IF NOT EXISTS jobs_manifest_target ON jobs (manifest_id, target_id) WHERE manifest_id IS NOT NULL;
      CREATE INDEX IF NOT EXISTS jobs_target ON jobs (target_id, created_at);
      CREATE TABLE IF NOT EXISTS job_files (
        job_id TEXT NOT NULL,
        file_id TEXT NOT NULL,
        done_bytes INTEGER NOT NULL DEFAULT 0,
        verified INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, file_id)
      );
      CREATE TABLE IF NOT EXISTS step_phases (
        job_id TEXT NOT NULL,
        step_index INTEGER NOT NULL,
        phase TEXT NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (job_id, step_index, phase)
      );
      -- A handler's failure verdict for a step's phase (step_phases says 'failed'); read when a restart finds it.
      CREATE TABLE IF NOT EXISTS step_failures (
        job_id TEXT NOT NULL,
        step_index INTEGER NOT NULL,
        phase TEXT NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (job_id, step_index, phase)
      );
      -- Whether a step of a reference step's child applies to the job's target (the child's compatibility),
      -- decided in verifying and only read after it, so a target changed later cannot change what a job runs.
      CREATE TABLE IF NOT EXISTS step_selection (
        job_id TEXT NOT NULL,
        step_index INTEGER NOT NULL,
        applies INTEGER NOT NULL,
        PRIMARY KEY (job_id, step_index)
      );
      CREATE TABLE IF NOT EXISTS job_log (
        job_id TEXT NOT NULL,
        at TEXT NOT NULL,
        line TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS job_log_by_job ON job_log (job_id);
      CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL
      );
      CREATE TABLE IF NOT EXISTS targets (
        target_id TEXT PRIMARY KEY,
        update_id TEXT NOT NULL,
        version TEXT NOT NULL,
        installed_at TEXT NOT NULL,
        source TEXT NOT NULL
      );
    `);
  }

  close(): void {
    this.#db.close();
  }

  /** Stores a new job unless its id or its manifest id is known. Returns the stored job, or why not. */
  insertJob(input: {
    jobId: string;
    gatewayId: string;
    targetId: string;
    delivery: UpdateDelivery;
    updateId: UpdateId;
    manifestId: string | undefined;
    source: JobSource;
  }): { status: 'inserted'; job: UpdateJob } | { status: 'duplicate'; job: UpdateJob } | { status: 'replayed'; otherJobId: string } {
    const tx = this.#db.transaction(() => {
      const existing = this.getJob(input.jobId);
      if (existing) return { status: 'duplicate' as const, job: existing };
      if (input.manifestId) {
        const other = this.#db
          .prepare<[string, string], { job_id: string }>('SELECT job_id FROM jobs WHERE manifest_id = ? AND target_id = ?')
          .get(input.manifestId, input.targetId);
        if (other) return { status: 'replayed' as const, otherJobId: other.job_id };
      }
      const now = this.#now().toISOString();
      this.#db
        .prepare(
          `INSERT INTO jobs (job_id, gateway_id, target_id, state, delivery, update_id, manifest_id, source, state_entries, created_at, updated_at)
           VALUES (?, ?, ?, 'accepted', ?, ?, ?, ?, '{"accepted":1}', ?, ?)`,
        )
        .run(input.jobId, input.gatewayId, input.targetId, JSON.stringify(input.delivery), JSON.stringify(input.updateId),
          input.manifestId ?? null, input.source, now, now);
      return { status: 'inserted' as const, job: this.getJob(input.jobId) as UpdateJob };
    });
    return tx();
  }

  getJob(jobId: string): UpdateJob | undefined {
    const row = this.#db.prepare<[string], JobRow>('SELECT * FROM jobs WHERE job_id = ?').get(jobId);
    return row ? toJob(row) : undefined;
  }

  /** Unfinished jobs, oldest first (the engine resumes them on start-up). */
  activeJobs(): UpdateJob[] {
    return this.#db
      .prepare<[], JobRow>(`SELECT * FROM jobs WHERE state NOT IN (${terminalList}) ORDER BY created_at, rowid`)
      .all()
      .map(toJob);
  }

  recentJobs(limit: number): UpdateJob[] {
    return this.#db.prepare<[number], JobRow>('SELECT * FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?').all(limit).map(toJob);
  }

  /**
   * Moves a job from `from` to `to` and queues its feedback, atomically. Refuses (returns undefined) when the job
   * is no longer in `from`, so two writers cannot both advance it.
   */
  transition(
    jobId: string,
    from: JobState,
    to: JobState,
    feedback: FeedbackDraft[],
    result: { resultCode?: number; extendedResultCode?: number; resultDetails?: string | undefined; installedVersion?: string | undefined } = {},
  ): UpdateJob | undefined {
    const tx = this.#db.transaction(() => {
      const job = this.getJob(jobId);
      if (job?.state !== from) return undefined;
      const entries = { ...job.stateEntries, [to]: (job.stateEntries[to] ?? 0) + (from === to ? 0 : 1) };
      this.#db
        .prepare(
          `UPDATE jobs SET state = ?, state_entries = ?, updated_at = ?,
             result_code = COALESCE(?, result_code), extended_result_code = COALESCE(?, extended_result_code),
             result_details = COALESCE(?, result_details), installed_version = COALESCE(?, installed_version)
           WHERE job_id = ?`,
        )
        .run(to, JSON.stringify(entries), this.#now().toISOString(), result.resultCode ?? null, result.extendedResultCode ?? null,
          result.resultDetails ?? null, result.installedVersion ?? null, jobId);
      for (const draft of feedback) this.#appendFeedback(jobId, draft);
      return this.getJob(jobId);
    });
    return tx();
  }

  /** Records that a state is being entered again after a restart (counts toward the re-entry cap). */
  reenter(jobId: string, state: JobState): UpdateJob | undefined {
    const tx = this.#db.transaction(() => {
      const job = this.getJob(jobId);
      if (job?.state !== state) return undefined;
      const entries = { ...job.stateEntries, [state]: (job.stateEntries[state] ?? 0) + 1 };
      this.#db.prepare('UPDATE jobs SET state_entries = ?, updated_at = ? WHERE job_id = ?').run(JSON.stringify(entries), this.#now().toISOString(), jobId);
      return this.getJob(jobId);
    });
    return tx();
  }

  /** Queues feedback that does not change the state (progress). */
  appendFeedback(jobId: string, draft: FeedbackDraft): void {
    this.#db.transaction(() => this.#appendFeedback(jobId, draft))();
  }

  #appendFeedback(jobId: string, draft: FeedbackDraft): void {
    const row = this.#db
      .prepare<[string], { sequence: number; gateway_id: string; target_id: string; update_id: string }>(
        'UPDATE jobs SET sequence = sequence + 1 WHERE job_id = ? RETURNING sequence, gateway_id, target_id, update_id',
      )
      .get(jobId);
    if (!row) throw new Error(`no job ${jobId}`);
    const sequence = row.sequence - 1;
    const message: FeedbackMessage = {
      schema: FEEDBACK_SCHEMA,
      messageId: feedbackMessageId(jobId, sequence),
      jobId,
      sequence,
      gatewayId: row.gateway_id,
      deviceId: row.target_id,
      updateId: JSON.parse(row.update_id) as UpdateId,
      step: draft.step,
      status: draft.status,
      ...(draft.progress ? { progress: draft.progress } : {}),
      resultCode: draft.resultCode,
      extendedResultCode: draft.extendedResultCode,
      ...(draft.resultDetails ? { resultDetails: draft.resultDetails.slice(0, 2048) } : {}),
      ...(draft.installedVersion ? { installedVersion: draft.installedVersion } : {}),
      timestamp: this.#now().toISOString(),
    };
    this.#db.prepare('INSERT INTO outbox (message_id, body) VALUES (?, ?)').run(message.messageId, JSON.stringify(message));
  }

  requestCancel(jobId: string): UpdateJob | undefined {
    this.#db.prepare('UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ?').run(this.#now().toISOString(), jobId);
    return this.getJob(jobId);
  }

  // ---- downloads ----

  fileProgress(jobId: string, fileId: string): FileProgress {
    const row = this.#db
      .prepare<[string, string], { done_bytes: number; verified: number }>('SELECT done_bytes, verified FROM job_files WHERE job_id = ? AND file_id = ?')
      .get(jobId, fileId);
    return { fileId, doneBytes: row?.done_bytes ?? 0, verified: row?.verified === 1 };
  }

  recordFileProgress(jobId: string, fileId: string, doneBytes: number, verified: boolean): void {
    this.#db
      .prepare(
        `INSERT INTO job_files (job_id, file_id, done_bytes, verified) VALUES (?, ?, ?, ?)
         ON CONFLICT(job_id, file_id) DO UPDATE SET done_bytes = excluded.done_bytes, verified = excluded.verified`,
      )
      .run(jobId, fileId, doneBytes, verified ? 1 : 0);
  }

  // ---- per-step phases: a multi-step update never repeats a step that finished ----

  stepPhase(jobId: string, stepIndex: number, phase: StepPhase): StepPhaseStatus {
    const row = this.#db
      .prepare<[string, number, string], { status: StepPhaseStatus }>('SELECT status FROM step_phases WHERE job_id = ? AND step_index = ? AND phase = ?')
      .get(jobId, stepIndex, phase);
    return row?.status ?? 'none';
  }

  markStepPhase(jobId: string, stepIndex: number, phase: StepPhase, status: Exclude<StepPhaseStatus, 'none'>): void {
    this.#db
      .prepare(
        `INSERT INTO step_phases (job_id, step_index, phase, status) VALUES (?, ?, ?, ?)
         ON CONFLICT(job_id, step_index, phase) DO UPDATE SET status = excluded.status`,
      )
      .run(jobId, stepIndex, phase, status);
  }

  /** Marks the phase failed and keeps why, in one transaction. */
  recordStepFailure(jobId: string, stepIndex: number, phase: StepPhase, failure: StepFailure): void {
    this.#db.transaction(() => {
      this.markStepPhase(jobId, stepIndex, phase, 'failed');
      this.#db
        .prepare(
          `INSERT INTO step_failures (job_id, step_index, phase, code, message) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT(job_id, step_index, phase) DO UPDATE SET code = excluded.code, message = excluded.message`,
        )
        .run(jobId, stepIndex, phase, failure.code, failure.message);
    })();
  }

  stepFailure(jobId: string, stepIndex: number, phase: StepPhase): StepFailure | undefined {
    return this.#db
      .prepare<[string, number, string], StepFailure>('SELECT code, message FROM step_failures WHERE job_id = ? AND step_index = ? AND phase = ?')
      .get(jobId, stepIndex, phase);
  }

  recordStepSelection(jobId: string, stepIndex: number, applies: boolean): void {
    this.#db
      .prepare(
        `INSERT INTO step_selection (job_id, step_index, applies) VALUES (?, ?, ?)
         ON CONFLICT(job_id, step_index) DO UPDATE SET applies = excluded.applies`,
      )
      .run(jobId, stepIndex, applies ? 1 : 0);
  }

  /** Whether the step applies to the target; undefined when nothing was recorded (the manifest's own steps always apply). */
  stepSelection(jobId: string, stepIndex: number): boolean | undefined {
    const row = this.#db
      .prepare<[string, number], { applies: number }>('SELECT applies FROM step_selection WHERE job_id = ? AND step_index = ?')
      .get(jobId, stepIndex);
    return row === undefined ? undefined : row.applies === 1;
  }

  // ---- job log (script output, handler notes) ----

  log(jobId: string, line: string): void {
    this.#db.prepare('INSERT INTO job_log (job_id, at, line) VALUES (?, ?, ?)').run(jobId, this.#now().toISOString(), line.slice(0, 4096));
  }

  jobLog(jobId: string): string[] {
    return this.#db.prepare<[string], { line: string }>('SELECT line FROM job_log WHERE job_id = ? ORDER BY rowid').all(jobId).map((r) => r.line);
  }

  // ---- feedback outbox ----

  pendingFeedback(limit: number): OutboxEntry[] {
    return this.#db
      .prepare<[number], { seq: number; body: string }>('SELECT seq, body FROM outbox ORDER BY seq LIMIT ?')
      .all(limit)
      .map((r) => ({ seq: r.seq, message: JSON.parse(r.body) as FeedbackMessage }));
  }

  acknowledgeFeedback(seq: number): void {
    this.#db.prepare('DELETE FROM outbox WHERE seq = ?').run(seq);
  }

  outboxSize(): number {
    return this.#db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM outbox').get()?.n ?? 0;
  }

  // ---- what each target runs ----

  recordInstalled(record: Omit<TargetRecord, 'installedAt'>): void {
    this.#db
      .prepare(
        `INSERT INTO targets (target_id, update_id, version, installed_at, source) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT(target_id) DO UPDATE SET update_id = excluded.update_id, version = excluded.version,
           installed_at = excluded.installed_at, source = excluded.source`,
      )
      .run(record.targetId, JSON.stringify(record.updateId), record.version, this.#now().toISOString(), record.source);
  }

  installed(targetId: string): TargetRecord | undefined {
    const row = this.#db
      .prepare<[string], { target_id: string; update_id: string; version: string; installed_at: string; source: JobSource }>(
        'SELECT * FROM targets WHERE target_id = ?',
      )
      .get(targetId);
    return row
      ? { targetId: row.target_id, updateId: JSON.parse(row.update_id) as UpdateId, version: row.version, installedAt: row.installed_at, source: row.source }
      : undefined;
  }

  allInstalled(): TargetRecord[] {
    return this.#db
      .prepare<[], { target_id: string }>('SELECT target_id FROM targets ORDER BY target_id')
      .all()
      .map((r) => this.installed(r.target_id) as TargetRecord);
  }
}

function toJob(row: JobRow): UpdateJob {
  return {
    jobId: row.job_id,
    gatewayId: row.gateway_id,
    targetId: row.target_id,
    state: row.state,
    delivery: JSON.parse(row.delivery) as UpdateDelivery,
    updateId: JSON.parse(row.update_id) as UpdateId,
    manifestId: row.manifest_id ?? undefined,
    source: row.source,
    stateEntries: JSON.parse(row.state_entries) as Partial<Record<JobState, number>>,
    cancelRequested: row.cancel_requested === 1,
    resultCode: row.result_code ?? undefined,
    extendedResultCode: row.extended_result_code ?? undefined,
    resultDetails: row.result_details ?? undefined,
    installedVersion: row.installed_version ?? undefined,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

