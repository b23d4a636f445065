import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

// WAL checkpoints on a second connection in a worker thread. A checkpoint copies the WAL into the database and
// fsyncs both; run by SQLite's auto-checkpoint it happens inside whichever commit crosses the threshold, on the
// event loop: measured at 0.1-0.7 s stalls every ~4 MB of WAL in the dispatcher, and up to 1.5 s in the hub
// emulator under the dispatch bench. Commits are unchanged (WAL, synchronous as configured); only the copy-back
// moves. Used by the dispatcher's store and the emulator's stores.

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
let db;
try {
  db = new Database(workerData.file, { fileMustExist: true });
  db.pragma('busy_timeout = 1000');
  db.pragma('synchronous = ' + workerData.synchronous);
} catch {
  process.exit(0);
}
const checkpoint = () => {
  try { db.pragma('wal_checkpoint(PASSIVE)'); } catch { /* busy or closing: the next round does it */ }
};
const timer = setInterval(checkpoint, workerData.intervalMs);
parentPort.on('message', () => {
  clearInterval(timer);
  checkpoint();
  try { db.close(); } catch { /* already gone */ }
  process.exit(0);
});
`;
const driver = createRequire(import.meta.url).resolve('better-sqlite3');
/** The main connection checkpoints by itself only if the worker falls this far behind (pages of 4 KB: 64 MB). */
const BACKSTOP_CHECKPOINT_PAGES = 16_000;

export interface BackgroundCheckpointOptions {
  /** The same `synchronous` level as the main connection's. */
  synchronous?: 'NORMAL' | 'FULL';
  intervalMs?: number;
}

/**
 * Moves the checkpoints of `db` (a better-sqlite3 connection to `file`, in WAL mode) to a worker. The worker never
 * keeps the process alive, and a failure of it only brings back the backstop checkpoints. `close()` after closing
 * `db`: the worker checkpoints once more, closes its connection and ends (the last connection folds the WAL in).
 */
export function checkpointInBackground(db: { pragma(source: string): unknown }, file: string, options: BackgroundCheckpointOptions = {}): { close(): void } {
  db.pragma(`wal_autocheckpoint = ${BACKSTOP_CHECKPOINT_PAGES}`);
  const worker = new Worker(WORKER, {
    eval: true, execArgv: [], workerData: { driver, file, synchronous: options.synchronous ?? 'NORMAL', intervalMs: options.intervalMs ?? 250 },
  });
  worker.unref();
  worker.on('error', () => undefined);
  return { close: () => void worker.postMessage('close') };
}
