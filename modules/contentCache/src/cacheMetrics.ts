// Counters for hit/miss/egress and the Prometheus text rendering of them.
export interface CacheCounters {
  hitRequests: number;
  missRequests: number;
  hitBytes: number;
  missBytes: number;
  egressBytes: number;
  upstreamBytes: number;
  upstreamRequests: number;
  upstreamFailures: number;
  fillsStarted: number;
  fillsPublished: number;
  fillsFailed: number;
  passThroughFills: number;
  hashMismatches: number;
  deniedRequests: number;
  evictions: number;
}

export interface CacheGauges {
  objects: number;
  storedBytes: number;
  pinnedObjects: number;
  reservedBytes: number;
  fillsInFlight: number;
}

const HELP: Record<keyof CacheCounters, [string, string]> = {
  hitRequests: ['content_cache_hit_requests_total', 'Requests served from a published object'],
  missRequests: ['content_cache_miss_requests_total', 'Requests that joined or started a fill'],
  hitBytes: ['content_cache_hit_bytes_total', 'Body bytes sent from published objects'],
  missBytes: ['content_cache_miss_bytes_total', 'Body bytes sent while filling'],
  egressBytes: ['content_cache_egress_bytes_total', 'All body bytes sent to clients'],
  upstreamBytes: ['content_cache_upstream_bytes_total', 'Body bytes received from upstreams'],
  upstreamRequests: ['content_cache_upstream_requests_total', 'Requests sent upstream, resumes included'],
  upstreamFailures: ['content_cache_upstream_failures_total', 'Upstream attempts that failed'],
  fillsStarted: ['content_cache_fills_started_total', 'Single-flight fills started'],
  fillsPublished: ['content_cache_fills_published_total', 'Fills verified and published'],
  fillsFailed: ['content_cache_fills_failed_total', 'Fills that failed on every upstream'],
  passThroughFills: ['content_cache_pass_through_fills_total', 'Fills that could not be stored (quota, ENOSPC)'],
  hashMismatches: ['content_cache_hash_mismatches_total', 'Objects whose bytes did not match their hash'],
  deniedRequests: ['content_cache_denied_requests_total', 'Requests refused for missing or bad tokens'],
  evictions: ['content_cache_evictions_total', 'Objects evicted by the quota'],
};

const GAUGE_HELP: Record<keyof CacheGauges, [string, string]> = {
  objects: ['content_cache_objects', 'Published objects'],
  storedBytes: ['content_cache_stored_bytes', 'Bytes of published objects'],
  pinnedObjects: ['content_cache_pinned_objects', 'Pinned hashes'],
  reservedBytes: ['content_cache_reserved_bytes', 'Bytes reserved by fills in flight'],
  fillsInFlight: ['content_cache_fills_in_flight', 'Fills in flight'],
};

export class CacheMetrics {
  readonly counters: CacheCounters = {
    hitRequests: 0,
    missRequests: 0,
    hitBytes: 0,
    missBytes: 0,
    egressBytes: 0,
    upstreamBytes: 0,
    upstreamRequests: 0,
    upstreamFailures: 0,
    fillsStarted: 0,
    fillsPublished: 0,
    fillsFailed: 0,
    passThroughFills: 0,
    hashMismatches: 0,
    deniedRequests: 0,
    evictions: 0,
  };

  prometheus(gauges: CacheGauges): string {
    const lines: string[] = [];
    for (const [key, [name, help]] of Object.entries(HELP) as Array<[keyof CacheCounters, [string, string]]>) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`, `${name} ${this.counters[key]}`);
    }
    for (const [key, [name, help]] of Object.entries(GAUGE_HELP) as Array<[keyof CacheGauges, [string, string]]>) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${gauges[key]}`);
    }
    return `${lines.join('\n')}\n`;
  }
}
