// Published objects on disk, named by their sha256, with an SQLite index of sizes, pins, sources and LRU order.
import Database from 'better-sqlite3';
import { mkdirSync, readdirSync, rmSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

export interface StoredObject {
  sha256: string;
  size: number;
  pinned: boolean;
  verified: boolean;
  lastAccess: number;
  contentType: string;
}

export interface UrlEntry {
  sha256: string;
  contentType: string;
}

interface ObjectRow {
  sha256: string;
  size: number;
  pinned: number;
  verified: number;
  last_access: number;
  content_type: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS objects (
  sha256 TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  verified INTEGER NOT NULL,
  last_access INTEGER NOT NULL,
  content_type TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_lru ON objects (last_access);
CREATE TABLE IF NOT EXISTS pins (sha256 TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS sources (sha256 TEXT NOT NULL, url TEXT NOT NULL, PRIMARY KEY (sha256, url));
CREATE TABLE IF NOT EXISTS url_keys (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS url_keys_object ON url_keys (sha256);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

export const SHA256_HEX = /^[0-9a-f]{64}$/;

export class ContentStore {
  readonly objectsDir: string;
  readonly tempDir: string;
  /** True when the previous run did not close the store: its objects get re-hashed before first use. */
  readonly recoveredFromCrash: boolean;
  readonly #db: Database.Database;
  // Monotonic access counter: LRU order must not depend on clock resolution or clock jumps.
  #clock: number;

  constructor(stateDir: string) {
    this.objectsDir = path.join(stateDir, 'objects');
    this.tempDir = path.join(stateDir, 'tmp');
    mkdirSync(this.objectsDir, { recursive: true });
    // Whatever is in tmp/ was never verified; nothing can still be writing it, so it all goes.
    rmSync(this.tempDir, { recursive: true, force: true });
    mkdirSync(this.tempDir, { recursive: true });
    this.#db = new Database(path.join(stateDir, 'index.sqlite'));
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#db.exec(SCHEMA);
    const clean = this.#db.prepare<[], { value: string }>("SELECT value FROM meta WHERE name = 'clean'").get();
    this.recoveredFromCrash = clean !== undefined && clean.value !== '1';
    if (this.recoveredFromCrash) this.#db.exec('UPDATE objects SET verified = 0');
    this.#db.prepare("INSERT OR REPLACE INTO meta (name, value) VALUES ('clean', '0')").run();
    const max = this.#db.prepare<[], { m: number | null }>('SELECT MAX(last_access) AS m FROM objects').get();
    this.#clock = max?.m ?? 0;
    this.#dropOrphans();
  }

  // Files without an index row (crash between rename and insert) are unknown bytes: remove them.
  #dropOrphans(): void {
    const known = new Set(this.#db.prepare<[], { sha256: string }>('SELECT sha256 FROM objects').all().map((r) => r.sha256));
    for (const name of readdirSync(this.objectsDir)) {
      if (!known.has(name)) rmSync(path.join(this.objectsDir, name), { force: true });
    }
    const stmt = this.#db.prepare('DELETE FROM objects WHERE sha256 = ?');
    const present = new Set(readdirSync(this.objectsDir));
    for (const sha of known) if (!present.has(sha)) stmt.run(sha);
  }

  objectPath(sha256: string): string {
    if (!SHA256_HEX.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    return path.join(this.objectsDir, sha256);
  }

  newTempPath(): string {
    return path.join(this.tempDir, `${randomBytes(8).toString('hex')}.part`);
  }

  lookup(sha256: string): StoredObject | undefined {
    const row = this.#db
      .prepare<[string], ObjectRow>(
        `SELECT o.*, (SELECT COUNT(*) FROM pins p WHERE p.sha256 = o.sha256) AS pinned FROM objects o WHERE o.sha256 = ?`,
      )
      .get(sha256);
    return row && toObject(row);
  }

  /**
   * Moves a fully written, fsynced and hash-checked temp file into place. If a verified copy already
   * exists (same hash, so same bytes) the temp file is simply dropped; an unverified one is replaced.
   */
  async publish(tempPath: string, sha256: string, size: number, contentType: string): Promise<void> {
    const target = this.objectPath(sha256);
    if (this.lookup(sha256)?.verified) {
      await unlink(tempPath).catch(() => undefined);
      return;
    }
    await rename(tempPath, target);
    // The rename is only durable once the directory entry is.
    const dir = openSync(this.objectsDir, 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    try {
      this.#db
        .prepare('INSERT OR REPLACE INTO objects (sha256, size, verified, last_access, content_type) VALUES (?, ?, 1, ?, ?)')
        .run(sha256, size, ++this.#clock, contentType);
    } catch (err) {
      // A file without its index row would hold space until the next start: take it back now.
      await unlink(target).catch(() => undefined);
      throw err;
    }
  }

  markVerified(sha256: string): void {
    this.#db.prepare('UPDATE objects SET verified = 1 WHERE sha256 = ?').run(sha256);
  }

  touch(sha256: string): void {
    this.#db.prepare('UPDATE objects SET last_access = ? WHERE sha256 = ?').run(++this.#clock, sha256);
  }

  async remove(sha256: string): Promise<void> {
    this.#db.transaction(() => {
      this.#db.prepare('DELETE FROM objects WHERE sha256 = ?').run(sha256);
      this.#db.prepare('DELETE FROM url_keys WHERE sha256 = ?').run(sha256);
    })();
    await unlink(this.objectPath(sha256)).catch(() => undefined);
  }

  pin(sha256: string): void {
    this.#db.prepare('INSERT OR IGNORE INTO pins (sha256) VALUES (?)').run(sha256);
  }

  unpin(sha256: string): boolean {
    return this.#db.prepare('DELETE FROM pins WHERE sha256 = ?').run(sha256).changes > 0;
  }

  addSources(sha256: string, urls: readonly string[]): void {
    const stmt = this.#db.prepare('INSERT OR IGNORE INTO sources (sha256, url) VALUES (?, ?)');
    this.#db.transaction(() => {
      for (const url of urls) stmt.run(sha256, url);
    })();
  }

  sources(sha256: string): string[] {
    return this.#db
      .prepare<[string], { url: string }>('SELECT url FROM sources WHERE sha256 = ? ORDER BY rowid')
      .all(sha256)
      .map((r) => r.url);
  }

  lookupUrl(key: string): UrlEntry | undefined {
    return this.#db
      .prepare<[string], UrlEntry>(
        'SELECT u.sha256 AS sha256, o.content_type AS contentType FROM url_keys u JOIN objects o ON o.sha256 = u.sha256 WHERE u.key = ?',
      )
      .get(key);
  }

  bindUrl(key: string, sha256: string): void {
    this.#db.prepare('INSERT OR REPLACE INTO url_keys (key, sha256) VALUES (?, ?)').run(key, sha256);
  }

  list(): StoredObject[] {
    return this.#db
      .prepare<[], ObjectRow>(
        `SELECT o.*, (SELECT COUNT(*) FROM pins p WHERE p.sha256 = o.sha256) AS pinned FROM objects o ORDER BY o.last_access`,
      )
      .all()
      .map(toObject);
  }

  pinnedHashes(): string[] {
    return this.#db.prepare<[], { sha256: string }>('SELECT sha256 FROM pins').all().map((r) => r.sha256);
  }

  /** Unpinned objects, least recently used first. */
  evictionCandidates(): Array<{ sha256: string; size: number }> {
    return this.#db
      .prepare<[], { sha256: string; size: number }>(
        'SELECT sha256, size FROM objects WHERE sha256 NOT IN (SELECT sha256 FROM pins) ORDER BY last_access',
      )
      .all();
  }

  totals(): { objects: number; bytes: number } {
    const row = this.#db
      .prepare<[], { objects: number; bytes: number | null }>('SELECT COUNT(*) AS objects, SUM(size) AS bytes FROM objects')
      .get();
    return { objects: row?.objects ?? 0, bytes: row?.bytes ?? 0 };
  }

  close(): void {
    if (!this.#db.open) return;
    this.#db.prepare("INSERT OR REPLACE INTO meta (name, value) VALUES ('clean', '1')").run();
    this.#db.close();
  }
}

function toObject(row: ObjectRow): StoredObject {
  return {
    sha256: row.sha256,
    size: row.size,
    pinned: row.pinned > 0,
    verified: row.verified === 1,
    lastAccess: row.last_access,
    contentType: row.content_type,
  };
}
