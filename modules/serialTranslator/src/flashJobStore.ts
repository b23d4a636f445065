import Database from 'better-sqlite3';
import type { McuFlashProgress, McuFlashRequest } from '@edge-ota/common';
import { isFinalFlashStatus } from '@edge-ota/common';

// Every flash job and its last progress, in SQLite (WAL) on the module's volume. The job is written before the
// method answers "accepted", and each progress before it is sent, so after a restart getFlashStatus answers
// what was last said and an unfinished job is picked up again.

/** Where a job came from: the orchestrator's direct method, or the MCU twin's desired `firmware`. */
export type FlashJobSource = 'method' | 'twin';

export interface FlashJob {
  jobId: string;
  mcuId: string;
  source: FlashJobSource;
  request: McuFlashRequest;
  progress: McuFlashProgress;
  startedAt: string;
  endedAt: string | undefined;
}

interface Row {
  job_id: string;
  mcu_id: string;
  source: FlashJobSource;
  request: string;
  progress: string;
  started_at: string;
  ended_at: string | null;
}

export class FlashJobStore {
  readonly #db: Database.Database;

  constructor(file: string) {
    this.#db = new Database(file);
    this.#db.pragma('journal_mode = WAL');
    // FULL: a progress the orchestrator may have seen must still be there after a power cut.
    this.#db.pragma('synchronous = FULL');
    this.#db.exec(`CREATE TABLE IF NOT EXISTS flash_jobs (
      job_id TEXT PRIMARY KEY,
      mcu_id TEXT NOT NULL,
      source TEXT NOT NULL,
      request TEXT NOT NULL,
      progress TEXT NOT NULL,
      final INTEGER NOT NULL DEFAULT 0,
      started_at TEXT NOT NULL,
      ended_at TEXT
    )`);
    this.#db.exec('CREATE INDEX IF NOT EXISTS flash_jobs_open ON flash_jobs (mcu_id) WHERE final = 0');
  }

  get(jobId: string): FlashJob | undefined {
    const row = this.#db.prepare('SELECT * FROM flash_jobs WHERE job_id = ?').get(jobId) as Row | undefined;
    return row && toJob(row);
  }

  /** The job that holds this MCU, if any. */
  openJobFor(mcuId: string): FlashJob | undefined {
    const row = this.#db.prepare('SELECT * FROM flash_jobs WHERE mcu_id = ? AND final = 0 ORDER BY started_at LIMIT 1').get(mcuId) as Row | undefined;
    return row && toJob(row);
  }

  unfinished(): FlashJob[] {
    return (this.#db.prepare('SELECT * FROM flash_jobs WHERE final = 0 ORDER BY started_at').all() as Row[]).map(toJob);
  }

  /** The most recent job of an MCU (for its twin's last start/end times after a restart). */
  latestFor(mcuId: string): FlashJob | undefined {
    const row = this.#db.prepare('SELECT * FROM flash_jobs WHERE mcu_id = ? ORDER BY started_at DESC LIMIT 1').get(mcuId) as Row | undefined;
    return row && toJob(row);
  }

  insert(job: Omit<FlashJob, 'endedAt'>): void {
    this.#db
      .prepare('INSERT INTO flash_jobs (job_id, mcu_id, source, request, progress, final, started_at) VALUES (?, ?, ?, ?, ?, 0, ?)')
      .run(job.jobId, job.mcuId, job.source, JSON.stringify(job.request), JSON.stringify(job.progress), job.startedAt);
  }

  saveProgress(progress: McuFlashProgress): void {
    const final = isFinalFlashStatus(progress.status);
    this.#db
      .prepare('UPDATE flash_jobs SET progress = ?, final = ?, ended_at = CASE WHEN ? THEN ? ELSE ended_at END WHERE job_id = ?')
      .run(JSON.stringify(progress), final ? 1 : 0, final ? 1 : 0, new Date().toISOString(), progress.jobId);
  }

  close(): void {
    this.#db.close();
  }
}

function toJob(row: Row): FlashJob {
  return {
    jobId: row.job_id,
    mcuId: row.mcu_id,
    source: row.source,
    request: JSON.parse(row.request) as McuFlashRequest,
    progress: JSON.parse(row.progress) as McuFlashProgress,
    startedAt: row.started_at,
    endedAt: row.ended_at ?? undefined,
  };
}
