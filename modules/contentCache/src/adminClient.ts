// What the orchestrator calls: a thin typed client for the cache's admin API.
import type { CacheSummary, IngestOutcome, ListedObject, PrefetchOutcome } from './adminApi.ts';

export interface ContentCacheAdminOptions {
  /** e.g. http://contentCache:8080 */
  baseUrl: string;
  adminToken?: string | undefined;
}

export class ContentCacheAdmin {
  readonly #base: string;
  readonly #headers: Record<string, string>;

  constructor(options: ContentCacheAdminOptions) {
    this.#base = options.baseUrl.replace(/\/+$/, '');
    this.#headers = options.adminToken ? { authorization: `Bearer ${options.adminToken}` } : {};
  }

  async #call<T>(method: string, path: string, body?: unknown, accept: number[] = [200]): Promise<T> {
    const res = await fetch(`${this.#base}${path}`, {
      method,
      headers: body === undefined ? this.#headers : { ...this.#headers, 'content-type': 'application/json' },
      body: body === undefined ? null : JSON.stringify(body),
    });
    const json = (await res.json()) as T;
    if (!accept.includes(res.status)) throw new Error(`content cache ${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** Fetches and pins the objects; resolves when all are in (or with the failures, status 502 tolerated). */
  async prefetch(objects: Array<{ sha256: string; sources?: string[]; pin?: boolean }>): Promise<PrefetchOutcome[]> {
    const r = await this.#call<{ results: PrefetchOutcome[] }>('POST', '/admin/prefetch', { objects, wait: true }, [200, 502]);
    return r.results;
  }

  /** Starts prefetching in the background. */
  async prefetchLater(objects: Array<{ sha256: string; sources?: string[]; pin?: boolean }>): Promise<string[]> {
    return (await this.#call<{ accepted: string[] }>('POST', '/admin/prefetch', { objects }, [202])).accepted;
  }

  /** Files must be visible to the cache under one of its import roots. */
  async importFiles(files: Array<{ path: string; sha256: string }>, pin = true): Promise<IngestOutcome[]> {
    return (await this.#call<{ results: IngestOutcome[] }>('POST', '/admin/import', { files, pin }, [200, 422])).results;
  }

  /** Streams bytes to the cache, which keeps them only if they hash to sha256. */
  async upload(sha256: string, body: Uint8Array | ReadableStream<Uint8Array>, pin = true): Promise<IngestOutcome> {
    const res = await fetch(`${this.#base}/admin/objects/${sha256}?pin=${pin ? 1 : 0}`, {
      method: 'PUT',
      headers: { ...this.#headers, 'content-type': 'application/octet-stream' },
      body,
      duplex: 'half',
    });
    return (await res.json()) as IngestOutcome;
  }

  async unpin(sha256: string[]): Promise<number> {
    return (await this.#call<{ unpinned: number }>('POST', '/admin/unpin', { sha256 })).unpinned;
  }

  async list(): Promise<{ objects: ListedObject[]; pinned: string[] }> {
    return this.#call('GET', '/admin/objects');
  }

  async stats(): Promise<CacheSummary> {
    return this.#call('GET', '/admin/stats');
  }
}
