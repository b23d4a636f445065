// Range and conditional-request rules (RFC 9110), decided the way nginx decides them.
import { randomBytes } from 'node:crypto';

/** Inclusive byte range, like the numbers in a Content-Range header. */
export interface ByteRange {
  start: number;
  end: number;
}

export type RangeDecision =
  | { kind: 'full' }
  | { kind: 'partial'; ranges: ByteRange[] }
  | { kind: 'unsatisfiable' };

// A Range header longer than this is not a legitimate client; it is ignored rather than parsed.
const MAX_RANGE_HEADER_LENGTH = 8192;
const RANGE_SPEC = /^(\d{1,15})?-(\d{1,15})?$/;

/**
 * Turns a Range header into what to send. Anything malformed is ignored (200), as RFC 9110 allows;
 * overlapping ranges, ranges adding up to more than the object, or more than maxRanges are answered
 * with the whole object so a client cannot amplify one object into a huge multipart body.
 */
export function decideRanges(header: string | undefined, size: number, maxRanges: number): RangeDecision {
  if (header === undefined || header.length > MAX_RANGE_HEADER_LENGTH) return { kind: 'full' };
  const match = /^bytes=(.*)$/i.exec(header.trim());
  if (!match?.[1]) return { kind: 'full' };
  const specs = match[1].split(',');
  if (specs.length > maxRanges) return { kind: 'full' };
  const ranges: ByteRange[] = [];
  for (const raw of specs) {
    const spec = raw.trim();
    const parts = RANGE_SPEC.exec(spec);
    if (!parts) return { kind: 'full' };
    const [, first, last] = parts;
    if (first === undefined && last === undefined) return { kind: 'full' };
    if (first === undefined) {
      // Suffix range: the last N bytes.
      const n = Number(last);
      if (n === 0 || size === 0) continue;
      ranges.push({ start: Math.max(0, size - n), end: size - 1 });
      continue;
    }
    const start = Number(first);
    if (last !== undefined && Number(last) < start) return { kind: 'full' };
    if (start >= size) continue;
    const end = last === undefined ? size - 1 : Number(last);
    ranges.push({ start, end: Math.min(end, size - 1) });
  }
  if (ranges.length === 0) return { kind: 'unsatisfiable' };
  const sorted = [...ranges].sort((a, b) => a.start - b.start);
  let total = 0;
  for (let i = 0; i < sorted.length; i++) {
    const r = sorted[i]!;
    total += r.end - r.start + 1;
    if (i > 0 && r.start <= sorted[i - 1]!.end) return { kind: 'full' };
  }
  if (total > size) return { kind: 'full' };
  return { kind: 'partial', ranges };
}

function entityTags(header: string): string[] {
  return header
    .split(',')
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
}

/** If-None-Match uses the weak comparison: W/"x" matches "x". */
export function noneMatchHits(header: string | undefined, etag: string | undefined): boolean {
  if (header === undefined || etag === undefined) return false;
  const bare = (t: string) => (t.startsWith('W/') ? t.slice(2) : t);
  return entityTags(header).some((t) => t === '*' || bare(t) === bare(etag));
}

/**
 * If-Range uses the strong comparison and we send no Last-Modified, so a date or a weak tag never
 * matches: the client gets the whole object rather than a range of something else.
 */
export function ifRangeHolds(header: string | undefined, etag: string | undefined): boolean {
  if (header === undefined) return true;
  if (etag === undefined || header.startsWith('W/')) return false;
  return header.trim() === etag;
}

export interface MultipartPart {
  head: Buffer;
  range: ByteRange;
}

export interface MultipartLayout {
  contentType: string;
  parts: MultipartPart[];
  tail: Buffer;
  length: number;
}

/** Precomputes the multipart/byteranges framing so the exact Content-Length is known before the body. */
export function multipartLayout(ranges: ByteRange[], size: number, partType: string): MultipartLayout {
  const boundary = randomBytes(12).toString('hex');
  let length = 0;
  const parts = ranges.map((range) => {
    const head = Buffer.from(
      `\r\n--${boundary}\r\nContent-Type: ${partType}\r\nContent-Range: bytes ${range.start}-${range.end}/${size}\r\n\r\n`,
    );
    length += head.length + range.end - range.start + 1;
    return { head, range };
  });
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  length += tail.length;
  return { contentType: `multipart/byteranges; boundary=${boundary}`, parts, tail, length };
}
