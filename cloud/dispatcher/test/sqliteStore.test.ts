import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { SqliteStore, migrations } from '../src/sqliteStore.ts';
import { storeContract } from './storeContract.ts';

storeContract('SqliteStore', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-store-'));
  const file = path.join(dir, 'store.sqlite');
  const opened: SqliteStore[] = [new SqliteStore(file)];
  return {
    store: opened[0]!,
    reopen: () => {
      opened[0]!.close();
      const again = new SqliteStore(file);
      opened.push(again);
      return again;
    },
    cleanup: () => {
      for (const s of opened) {
        try {
          s.close();
        } catch {
          // closed already
        }
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

describe('SqliteStore', () => {
  it('runs in WAL mode and records its applied migrations, once', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-store-'));
    try {
      const file = path.join(dir, 's.sqlite');
      new SqliteStore(file).close();
      const again = new SqliteStore(file);
      expect(again.schemaVersion).toBe(migrations.length);
      again.close();
      const db = new Database(file, { readonly: true });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.prepare('SELECT COUNT(*) AS n FROM schema_migrations').get()).toEqual({ n: migrations.length });
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('upgrades a version-1 data directory in place, keeping its jobs, payloads, history and seen events', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-store-'));
    try {
      const file = path.join(dir, 's.sqlite');
      // A data directory as a version-1 dispatcher left it.
      const db = new Database(file);
      db.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
      db.exec(migrations[0]!);
      db.exec(`INSERT INTO schema_migrations VALUES (1, '2026-11-01T00:00:00.000Z');
        INSERT INTO devices (device_id, parent_id, is_gateway, tags, lifecycle, created_at) VALUES ('d', 'gw', 0, '{}', 'live', '2026-11-01T00:00:00.000Z');
        INSERT INTO jobs (job_id, device_id, gateway_id, update_id, delivery_state, payload, twin_payload, next_attempt_at, created_at, state)
          VALUES ('same', 'd', 'gw', 'P/N@1.0', 'pending', '{"m":1}', '{"m":1}', 0, '2026-11-01T00:00:00.000Z', 'pending'),
                 ('pointer', 'd', 'gw', 'P/N@2.0', 'delivered', '{"m":2}', '{"pointer":2}', 0, '2026-11-01T00:00:01.000Z', 'delivered');
        INSERT INTO history (device_id, job_id, at, kind, status) VALUES ('d', NULL, 'a', 'lifecycle', 'created'), ('d', 'same', 'b', 'delivery', 'recorded');
        INSERT INTO seen_events (event_id, at) VALUES ('feedback:x/0', 't');`);
      db.close();
      const upgraded = new SqliteStore(file);
      expect(upgraded.schemaVersion).toBe(migrations.length);
      expect(upgraded.jobStatus('same')?.origin).toBe('dispatched');
      expect(upgraded.getDelivery('same')).toMatchObject({ state: 'pending', payload: '{"m":1}', twinPayload: '{"m":1}' });
      expect(upgraded.getDelivery('pointer')).toMatchObject({ state: 'delivered', payload: '{"m":2}', twinPayload: '{"pointer":2}' });
      expect(upgraded.dueDeliveries(1, 10).map((d) => d.jobId)).toEqual(['same']);
      expect(upgraded.history('d', 10).map((h) => h.status)).toEqual(['created', 'recorded']);
      upgraded.addHistory('d', { at: 'c', jobId: undefined, kind: 'lifecycle', step: undefined, status: 'later', resultCode: undefined, extendedResultCode: undefined, details: undefined });
      expect(upgraded.history('d', 10).map((h) => h.status)).toEqual(['created', 'recorded', 'later']);
      expect(upgraded.isEventSeen('feedback:x/0')).toBe(true);
      expect(upgraded.markEventSeen('feedback:x/0', 't')).toBe(false);
      upgraded.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('checkpoints the WAL from its worker thread, and folds it into the database when closed', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-store-'));
    try {
      const file = path.join(dir, 's.sqlite');
      const store = new SqliteStore(file, { checkpointIntervalMs: 20 });
      for (let i = 0; i < 300; i++) store.addHistory('d', { at: 't', jobId: undefined, kind: 'lifecycle', step: undefined, status: 'x'.repeat(2000), resultCode: undefined, extendedResultCode: undefined, details: undefined });
      // The worker copies the WAL back while the store keeps running: the database file grows beyond its first pages.
      const deadline = Date.now() + 10_000;
      while (statSync(file).size < 300 * 2000 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(statSync(file).size).toBeGreaterThanOrEqual(300 * 2000);
      store.close();
      while (existsSync(`${file}-wal`) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(existsSync(`${file}-wal`)).toBe(false);
      const again = new SqliteStore(file, { backgroundCheckpoints: false });
      expect(again.history('d', 1000)).toHaveLength(300);
      again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
