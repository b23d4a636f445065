// JSON answers with a stable error code from one catalogue, the shape of every non-content response.
import type { ServerResponse } from 'node:http';

/** Every error this cache answers with; clients and the orchestrator may switch on the code. */
export const CACHE_ERRORS = {
  BAD_REQUEST: 400,
  BAD_HASH: 400,
  BAD_ORIGIN: 400,
  BAD_PATH: 400,
  UNAUTHORIZED: 401,
  ORIGIN_NOT_ALLOWED: 403,
  NOT_FOUND: 404,
  NO_SOURCE: 404,
  METHOD: 405,
  INTERNAL: 500,
  NO_UPSTREAM: 502,
  UPSTREAM_FAILED: 502,
  LOOP: 508,
} as const;

export type CacheErrorCode = keyof typeof CACHE_ERRORS;

export function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.setHeader('content-length', Buffer.byteLength(text));
  res.end(text);
}

export function replyError(res: ServerResponse, error: CacheErrorCode, message: string): void {
  reply(res, CACHE_ERRORS[error], { error, message });
}
