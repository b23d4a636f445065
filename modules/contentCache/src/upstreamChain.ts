// Where a miss is filled from, in order: the parent gateway's cache(s) first, then the origins themselves.
import type { DeliveryRequest } from './deliveryUrl.ts';

/** Header carrying the origin URL(s) of a content-addressed object; may repeat or hold a comma list. */
export const ORIGIN_HEADER = 'x-origin-url';
/** Instance ids of the caches a request has passed through, to stop a misconfigured parent loop. */
export const VIA_HEADER = 'x-content-cache-via';
export const MAX_HOPS = 32;

export interface UpstreamTarget {
  url: URL;
  headers: Record<string, string | string[]>;
  via: 'parent' | 'origin';
}

export interface UpstreamChainOptions {
  /** Base URLs of parent caches, e.g. http://parent-gateway:8080 */
  parents: readonly string[];
  /** Whether this layer may reach origins itself; lower ISA-95 layers usually cannot. */
  directOrigins: boolean;
  /** Bearer token presented to the parent cache. */
  token?: string | undefined;
}

export class UpstreamChain {
  readonly #parents: URL[];
  readonly #directOrigins: boolean;
  readonly #token: string | undefined;

  constructor(options: UpstreamChainOptions) {
    this.#parents = options.parents.map((p) => new URL(p));
    this.#directOrigins = options.directOrigins;
    this.#token = options.token;
  }

  get hasParents(): boolean {
    return this.#parents.length > 0;
  }

  #parentHeaders(via: readonly string[], extra: Record<string, string | string[]> = {}): Record<string, string | string[]> {
    const headers = { ...extra, [VIA_HEADER]: via.join(',') };
    return this.#token ? { ...headers, authorization: `Bearer ${this.#token}` } : headers;
  }

  /** Targets for /sha256/<hash>; the parent gets the origin list so it can fill in turn. */
  forContent(sha256: string, origins: readonly string[], via: readonly string[]): UpstreamTarget[] {
    const targets: UpstreamTarget[] = this.#parents.map((parent) => ({
      url: new URL(`/sha256/${sha256}`, parent),
      headers: this.#parentHeaders(via, origins.length > 0 ? { [ORIGIN_HEADER]: [...origins] } : {}),
      via: 'parent',
    }));
    if (this.#directOrigins) {
      for (const origin of origins) targets.push({ url: new URL(origin), headers: {}, via: 'origin' });
    }
    return targets;
  }

  /** Targets for a Delivery Optimization style request: parents see the same path and cacheHostOrigin. */
  forDelivery(request: DeliveryRequest, via: readonly string[]): UpstreamTarget[] {
    const targets: UpstreamTarget[] = this.#parents.map((parent) => ({
      url: new URL(request.cacheRelativeUrl, parent),
      headers: this.#parentHeaders(via),
      via: 'parent',
    }));
    if (this.#directOrigins) targets.push({ url: request.originUrl, headers: {}, via: 'origin' });
    return targets;
  }
}

/** Origin URLs from the request header(s) and `origin` query parameters; only http(s) is accepted. */
export function requestedOrigins(header: string | string[] | undefined, query: URLSearchParams): string[] | undefined {
  const raw = [...(Array.isArray(header) ? header : header ? [header] : []).flatMap((h) => h.split(',')), ...query.getAll('origin')];
  const origins: string[] = [];
  for (const candidate of raw.map((s) => s.trim()).filter((s) => s.length > 0)) {
    let url: URL;
    try {
      url = new URL(candidate);
    } catch {
      return undefined;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
    if (!origins.includes(url.href)) origins.push(url.href);
  }
  return origins;
}

/** The via list of an incoming request; each cache appends its own id before asking its parent. */
export function viaList(header: string | string[] | undefined): string[] {
  const raw = Array.isArray(header) ? header.join(',') : (header ?? '');
  return raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
}
