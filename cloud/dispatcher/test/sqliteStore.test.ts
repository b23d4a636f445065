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
      expect(again.schemaVersion).toBe(1);
      again.close();
      const db = new Database(file, { readonly: true });
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.prepare('SELECT COUNT(*) AS n FROM schema_migrations').get()).toEqual({ n: 1 });
      db.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
