// The demo's live view: what the dispatcher records for each watched device (lifecycle events, deliveries,
// per-step feedback), read through its device-manager API, and what each gateway's content cache fetched from
// its upstream, read from the cache's /stats. Polls on a short timer; every new record is printed once.

export interface HistoryEntry {
  at: string;
  jobId?: string;
  kind: 'lifecycle' | 'delivery' | 'feedback';
  step?: string;
  status: string;
  resultCode?: number;
  extendedResultCode?: number;
  details?: string;
}

export interface CacheStats {
  counters: { upstreamBytes: number; upstreamRequests: number; hitBytes: number; missBytes: number; egressBytes: number; fillsPublished: number };
  objects: number;
  storedBytes: number;
}

export interface LiveFeedOptions {
  dispatcherUrl: string;
  caches: ReadonlyArray<{ gatewayId: string; url: string; upstream: string }>;
  print: (source: string, subject: string, text: string) => void;
  intervalMs?: number;
}

export async function getJson<T>(url: string): Promise<T> {
  const response = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

export function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(2)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

function describe(entry: HistoryEntry): [string, string] {
  const code = entry.extendedResultCode ? ` (result ${entry.resultCode ?? '-'}, extended 0x${entry.extendedResultCode.toString(16).padStart(8, '0')})` : '';
  const details = entry.details ? `: ${entry.details}` : '';
  if (entry.kind === 'lifecycle') return ['hub', `lifecycle event ${entry.status}`];
  if (entry.kind === 'delivery' && entry.status === 'twinWritten') {
    return ['dispatcher', `manifest written to the module twin${entry.details ? ` (direct method: ${entry.details})` : ''}`];
  }
  if (entry.kind === 'delivery') return ['dispatcher', `manifest ${entry.status}${details}${code}`];
  return ['feedback', `${(entry.step ?? '').padEnd(8)} ${entry.status}${code}${details}`];
}

export class LiveFeed {
  readonly #options: LiveFeedOptions;
  readonly #watched = new Map<string, number>();
  readonly #cacheBytes = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> = Promise.resolve();
  #lastError: string | undefined;

  constructor(options: LiveFeedOptions) {
    this.#options = options;
  }

  watch(deviceId: string): void {
    if (!this.#watched.has(deviceId)) this.#watched.set(deviceId, 0);
  }

  start(): void {
    const tick = (): void => {
      void this.flush().finally(() => {
        if (this.#timer) this.#timer = setTimeout(tick, this.#options.intervalMs ?? 250);
      });
    };
    this.#timer = setTimeout(tick, 0);
  }

  /** Prints everything recorded so far; polls never overlap, so nothing is printed twice. */
  flush(): Promise<void> {
    this.#polling = this.#polling.then(() => this.#poll());
    return this.#polling;
  }

  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // One last look, so nothing recorded before the stop goes unprinted.
    await this.flush();
  }

  async #poll(): Promise<void> {
    try {
      for (const [deviceId, seen] of this.#watched) {
        const { history } = await getJson<{ history: HistoryEntry[] }>(`${this.#options.dispatcherUrl}/devices/${encodeURIComponent(deviceId)}/history?limit=5000`);
        for (const entry of history.slice(seen)) {
          const [source, text] = describe(entry);
          this.#options.print(source, deviceId, text);
        }
        this.#watched.set(deviceId, Math.max(seen, history.length));
      }
      for (const cache of this.#options.caches) {
        const stats = await getJson<CacheStats>(`${cache.url}/stats`);
        const before = this.#cacheBytes.get(cache.gatewayId) ?? 0;
        if (stats.counters.upstreamBytes > before) {
          this.#options.print('cache', cache.gatewayId, `fetched ${mib(stats.counters.upstreamBytes - before)} from ${cache.upstream} (${mib(stats.counters.upstreamBytes)} in all)`);
          this.#cacheBytes.set(cache.gatewayId, stats.counters.upstreamBytes);
        }
      }
      this.#lastError = undefined;
    } catch (error) {
      // A component that is restarting answers again on the next tick; say so once, not every 250 ms.
      const message = (error as Error).message;
      if (message !== this.#lastError) this.#options.print('demo', '-', `live view: ${message}`);
      this.#lastError = message;
    }
  }
}
