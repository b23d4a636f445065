import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';

// WAL checkpoints on a second connection in a worker thread. SQLite's auto-checkpoint runs inside whichever commit
// crosses 1000 pages and fsyncs the WAL and the database there, on the event loop: with the dispatch bench on a
// busy 2-core machine that stalled the emulator for up to 1.5 s at a time (registry creates, method calls and
// Event Hubs reads all wait behind it). Commits are unchanged (WAL, synchronous=NORMAL); only the copy-back moves.

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
let db;
try {
  db = new Database(workerData.file, { fileMustExist: true });
  db.pragma('busy_timeout = 1000');
  db.pragma('synchronous = NORMAL');
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

/** Moves `db`'s checkpoints to a worker; the main connection keeps a 64 MB backstop in case the worker falls behind. */
export function checkpointInBackground(db: Database.Database, file: string, intervalMs = 250): { close(): void } {
  db.pragma('wal_autocheckpoint = 16000');
  const worker = new Worker(WORKER, { eval: true, execArgv: [], workerData: { driver, file, intervalMs } });
  worker.unref();
  worker.on('error', () => undefined);
  return { close: () => void worker.postMessage('close') };
}
