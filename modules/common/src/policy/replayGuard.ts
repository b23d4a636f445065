import type Database from 'better-sqlite3';

/**
 * Remembers the ids of manifests a target has accepted until they expire, so a captured manifest cannot be
 * played back. Entries past their expiry can be dropped: the expiry check refuses those manifests anyway.
 */
export interface ReplayGuard {
  hasSeen(manifestId: string): boolean;
  remember(manifestId: string, expiresAt: Date): void;
  forgetExpired(now: Date): void;
}

export class MemoryReplayGuard implements ReplayGuard {
  #seen = new Map<string, number>();

  hasSeen(manifestId: string): boolean {
    return this.#seen.has(manifestId);
  }

  remember(manifestId: string, expiresAt: Date): void {
    this.#seen.set(manifestId, expiresAt.getTime());
  }

  forgetExpired(now: Date): void {
    for (const [id, expires] of this.#seen) if (expires < now.getTime()) this.#seen.delete(id);
  }
}

/** Replay memory that survives restarts, in the component's own SQLite database (the caller owns the handle). */
export class SqliteReplayGuard implements ReplayGuard {
  #db: Database.Database;

  constructor(db: Database.Database) {
    this.#db = db;
    db.exec('CREATE TABLE IF NOT EXISTS accepted_manifest (manifest_id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID');
  }

  hasSeen(manifestId: string): boolean {
    return this.#db.prepare('SELECT 1 FROM accepted_manifest WHERE manifest_id = ?').get(manifestId) !== undefined;
  }

  remember(manifestId: string, expiresAt: Date): void {
    this.#db.prepare('INSERT OR REPLACE INTO accepted_manifest (manifest_id, expires_at) VALUES (?, ?)').run(manifestId, expiresAt.getTime());
  }

  forgetExpired(now: Date): void {
    this.#db.prepare('DELETE FROM accepted_manifest WHERE expires_at < ?').run(now.getTime());
  }
}
