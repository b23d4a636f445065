// Keeps the store under its quota (LRU between watermarks) and checks the disk before a fill starts.
import { statfs } from 'node:fs/promises';
import type { ContentStore } from './contentStore.ts';
import type { Logger } from './log.ts';

export interface SpaceOptions {
  quotaBytes: number;
  /** Eviction starts above quota * highWatermark ... */
  highWatermark: number;
  /** ... and stops at quota * lowWatermark, so it runs in batches rather than on every fill. */
  lowWatermark: number;
  /** Free space the filesystem must keep after a fill (SQLite WAL, other volumes' users). */
  minFreeBytes: number;
}

export interface Reservation {
  bytes: number;
}

export class SpaceKeeper {
  readonly #store: ContentStore;
  readonly #options: SpaceOptions;
  readonly #isBusy: (sha256: string) => boolean;
  readonly #log: Logger;
  readonly #onEvicted: () => void;
  #reserved = 0;

  constructor(store: ContentStore, options: SpaceOptions, isBusy: (sha256: string) => boolean, log: Logger, onEvicted: () => void = () => {}) {
    this.#store = store;
    this.#options = options;
    this.#isBusy = isBusy;
    this.#log = log;
    this.#onEvicted = onEvicted;
  }

  get reservedBytes(): number {
    return this.#reserved;
  }

  /**
   * Claims room for a fill of `bytes` (0 when the size is unknown). Returns undefined when neither the
   * quota nor the disk can hold it even after evicting: the caller then passes the bytes through unstored.
   */
  async reserve(bytes: number): Promise<Reservation | undefined> {
    const { quotaBytes, lowWatermark, minFreeBytes } = this.#options;
    if (bytes > quotaBytes) return undefined;
    const used = () => this.#store.totals().bytes + this.#reserved;
    if (used() + bytes > quotaBytes) await this.#evictDownTo(Math.min(quotaBytes * lowWatermark, quotaBytes - bytes) - this.#reserved);
    if (used() + bytes > quotaBytes) return undefined;
    let free = await this.#freeBytes();
    if (free - this.#reserved - bytes < minFreeBytes) {
      const shortBy = minFreeBytes + bytes + this.#reserved - free;
      await this.#evictDownTo(this.#store.totals().bytes - shortBy);
      free = await this.#freeBytes();
      if (free - this.#reserved - bytes < minFreeBytes) return undefined;
    }
    this.#reserved += bytes;
    return { bytes };
  }

  release(reservation: Reservation | undefined): void {
    if (!reservation) return;
    this.#reserved -= reservation.bytes;
    reservation.bytes = 0;
  }

  /** Called after each publish: above the high watermark, evict down to the low one. */
  async afterPublish(): Promise<void> {
    const { quotaBytes, highWatermark, lowWatermark } = this.#options;
    if (this.#store.totals().bytes > quotaBytes * highWatermark) await this.#evictDownTo(quotaBytes * lowWatermark);
  }

  async #freeBytes(): Promise<number> {
    const s = await statfs(this.#store.tempDir);
    return s.bavail * s.bsize;
  }

  async #evictDownTo(targetBytes: number): Promise<void> {
    let total = this.#store.totals().bytes;
    for (const candidate of this.#store.evictionCandidates()) {
      if (total <= targetBytes) break;
      // Pinned objects never show up here; objects a client is reading or a flight is producing are skipped.
      if (this.#isBusy(candidate.sha256)) continue;
      await this.#store.remove(candidate.sha256);
      total -= candidate.size;
      this.#onEvicted();
      this.#log.info('evicted', { sha256: candidate.sha256, size: candidate.size });
    }
  }
}
