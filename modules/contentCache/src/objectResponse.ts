// Writes one object (published file or growing fill) as a 200/206/304/416 response, ranges included.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { decideRanges, ifRangeHolds, multipartLayout, noneMatchHits } from './byteRanges.ts';
import type { ByteRange } from './byteRanges.ts';

export interface ObjectView {
  size: number;
  etag: string | undefined;
  contentType: string;
  cacheStatus: 'HIT' | 'MISS';
  /** Bytes start..end inclusive; a Readable is piped (the hit path), anything else is copied. */
  open(start: number, end: number): AsyncIterable<Buffer> | Readable;
}

export interface SendOptions {
  maxRanges: number;
  /** Told about body bytes as they are handed to the socket, so counters are live. */
  count: (bytes: number) => void;
}

/** Sends the response. A body that fails midway cuts the connection. */
export async function sendObject(req: IncomingMessage, res: ServerResponse, view: ObjectView, options: SendOptions): Promise<void> {
  const { size, etag } = view;
  res.setHeader('accept-ranges', 'bytes');
  res.setHeader('x-cache', view.cacheStatus);
  if (etag) {
    res.setHeader('etag', etag);
    // A strong hash validator means the bytes under this name can never change.
    res.setHeader('cache-control', 'public, max-age=31536000, immutable');
  }
  if (noneMatchHits(req.headers['if-none-match'], etag)) {
    res.statusCode = 304;
    res.end();
    return;
  }
  const ifRange = req.headers['if-range'];
  const rangeHeader = ifRangeHolds(typeof ifRange === 'string' ? ifRange : undefined, etag) ? req.headers.range : undefined;
  const decision = decideRanges(rangeHeader, size, options.maxRanges);
  if (decision.kind === 'unsatisfiable') {
    res.statusCode = 416;
    res.setHeader('content-range', `bytes */${size}`);
    res.setHeader('content-length', 0);
    res.end();
    return;
  }
  const head = req.method === 'HEAD';
  if (decision.kind === 'full' || decision.ranges.length === 1) {
    const range: ByteRange = decision.kind === 'full' ? { start: 0, end: size - 1 } : decision.ranges[0]!;
    res.statusCode = decision.kind === 'full' ? 200 : 206;
    res.setHeader('content-type', view.contentType);
    res.setHeader('content-length', range.end - range.start + 1);
    if (decision.kind === 'partial') res.setHeader('content-range', `bytes ${range.start}-${range.end}/${size}`);
    if (head || size === 0) {
      res.end();
      return;
    }
    await copy(view.open(range.start, range.end), res, true, options.count);
    return;
  }
  const layout = multipartLayout(decision.ranges, size, view.contentType);
  res.statusCode = 206;
  res.setHeader('content-type', layout.contentType);
  res.setHeader('content-length', layout.length);
  if (head) {
    res.end();
    return;
  }
  for (const part of layout.parts) {
    if (!(await write(res, part.head))) return;
    await copy(view.open(part.range.start, part.range.end), res, false, options.count);
    if (res.destroyed) return;
  }
  res.end(layout.tail);
}

async function write(res: ServerResponse, chunk: Buffer): Promise<boolean> {
  if (res.destroyed) return false;
  if (!res.write(chunk)) await drained(res);
  return !res.destroyed;
}

// events.once leaves its listener behind on the loser of a race; this removes both.
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

async function copy(source: AsyncIterable<Buffer> | Readable, res: ServerResponse, end: boolean, count: (n: number) => void): Promise<void> {
  try {
    if (source instanceof Readable && end) {
      source.on('data', (chunk: Buffer) => count(chunk.length));
      await pipeline(source, res);
      return;
    }
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (!(await write(res, chunk))) break;
      count(chunk.length);
    }
    if (end && !res.destroyed) res.end();
  } catch (err) {
    // Headers (and a Content-Length) are out: a short clean response would look complete, so cut it.
    res.destroy(err instanceof Error ? err : new Error(String(err)));
  } finally {
    if (source instanceof Readable) source.destroy();
  }
}
