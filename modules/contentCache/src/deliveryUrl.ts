// Delivery Optimization / Connected Cache URL mode: GET <original path>?cacheHostOrigin=<host>.
export interface DeliveryRequest {
  originHost: string;
  originUrl: URL;
  /** Path and query as a parent cache expects them (cacheHostOrigin kept). */
  cacheRelativeUrl: string;
  /** Stable identity of the content: signature and expiry parameters change per download, the bytes do not. */
  cacheKey: string;
}

export type DeliveryParse =
  | { ok: true; request: DeliveryRequest }
  | { ok: false; error: 'BAD_PATH' | 'BAD_ORIGIN' | 'ORIGIN_NOT_ALLOWED'; reason: string };

// Query parameters that authorise or expire a URL (Azure SAS, S3 SigV4/V2, CloudFront, GCS) but do not name content.
const VOLATILE_PARAMS = new Set([
  'sig', 'se', 'st', 'sp', 'sv', 'sr', 'spr', 'ss', 'srt', 'skoid', 'sktid', 'skt', 'ske', 'sks', 'skv', 'sdd',
  'signature', 'expires', 'key-pair-id', 'policy', 'awsaccesskeyid', 'googleaccessid', 'x-ms-date',
]);

function isVolatile(name: string): boolean {
  const lower = name.toLowerCase();
  return VOLATILE_PARAMS.has(lower) || lower.startsWith('x-amz-') || lower.startsWith('x-goog-');
}

// Encoded slashes, backslashes, dot segments and control bytes have no business in an artifact path and
// are how path confusion starts between this cache, a parent and an origin.
const HOSTILE_PATH = /%2f|%5c|%00|\\|(^|\/)\.\.?(\/|$)|%2e%2e|\.%2e|%2e\./i;
// eslint-disable-next-line no-control-regex -- control bytes are exactly what this rejects
const CONTROL = /[\x00-\x1f\x7f]/;
const HOST = /^[a-z0-9.-]+(:\d{1,5})?$/i;

/**
 * allowedOrigins maps a lower-case host[:port] to its scheme and authority. Only listed hosts are
 * fetched: anything else would make the cache an open proxy.
 */
export function parseDeliveryRequest(rawUrl: string, allowedOrigins: ReadonlyMap<string, URL>): DeliveryParse {
  const q = rawUrl.indexOf('?');
  const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
  if (!rawPath.startsWith('/') || rawPath.startsWith('//') || HOSTILE_PATH.test(rawPath) || CONTROL.test(rawPath)) {
    return { ok: false, error: 'BAD_PATH', reason: 'path has encoded slashes, dot segments or control bytes' };
  }
  const query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1));
  const hosts = query.getAll('cacheHostOrigin');
  if (hosts.length !== 1 || !HOST.test(hosts[0]!)) return { ok: false, error: 'BAD_ORIGIN', reason: 'exactly one cacheHostOrigin host[:port] expected' };
  const originHost = hosts[0]!.toLowerCase();
  const origin = allowedOrigins.get(originHost);
  if (!origin) return { ok: false, error: 'ORIGIN_NOT_ALLOWED', reason: `origin ${originHost} is not configured` };

  const forwarded = new URLSearchParams();
  const keyed: Array<[string, string]> = [];
  for (const [name, value] of query) {
    if (name === 'cacheHostOrigin') continue;
    forwarded.append(name, value);
    if (!isVolatile(name)) keyed.push([name, value]);
  }
  keyed.sort(([a, x], [b, y]) => (a === b ? (x < y ? -1 : x > y ? 1 : 0) : a < b ? -1 : 1));
  const fq = forwarded.toString();
  const originUrl = new URL(`${rawPath}${fq ? `?${fq}` : ''}`, origin);
  return {
    ok: true,
    request: {
      originHost,
      originUrl,
      cacheRelativeUrl: rawUrl,
      cacheKey: `${originHost}${rawPath}?${new URLSearchParams(keyed).toString()}`,
    },
  };
}

/** Reads "host", "host:port", "http://host" or "https://host:port" into the allow-list map. */
export function originAllowList(entries: readonly string[]): Map<string, URL> {
  const map = new Map<string, URL>();
  for (const entry of entries.map((e) => e.trim()).filter((e) => e.length > 0)) {
    const url = new URL(entry.includes('://') ? entry : `http://${entry}`);
    map.set(url.host.toLowerCase(), new URL(`${url.protocol}//${url.host}`));
  }
  return map;
}
