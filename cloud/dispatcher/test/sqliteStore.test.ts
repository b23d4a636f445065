import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { SqliteStore } from '../src/sqliteStore.ts';
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
      expect(again.schemaVersion).toBe(2);
      again.close();
      const db = new Database(file, { readonly: true });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.prepare('SELECT COUNT(*) AS n FROM schema_migrations').get()).toEqual({ n: 2 });
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('upgrades a version-1 data directory in place: its jobs become dispatched jobs', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-store-'));
    try {
      const file = path.join(dir, 's.sqlite');
      new SqliteStore(file).close();
      // Back to the version-1 schema, with a job recorded by a version-1 dispatcher.
      const db = new Database(file);
      db.exec(`ALTER TABLE jobs DROP COLUMN origin; DELETE FROM schema_migrations WHERE version = 2;
        INSERT INTO jobs (job_id, device_id, gateway_id, update_id, delivery_state, payload, twin_payload, next_attempt_at, created_at, state)
        VALUES ('old', 'd', 'gw', 'P/N@1.0', 'pending', '{}', '{}', 0, '2026-11-22T00:00:00.000Z', 'pending')`);
      db.close();
      const upgraded = new SqliteStore(file);
      expect(upgraded.schemaVersion).toBe(2);
      expect(upgraded.jobStatus('old')?.origin).toBe('dispatched');
      expect(upgraded.getDelivery('old')?.state).toBe('pending');
      upgraded.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
