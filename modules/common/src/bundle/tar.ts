import { OtaError } from '../errors.ts';
import type { ByteCursor } from './byteCursor.ts';

// Just enough POSIX tar (ustar + pax "path"/"size" records + GNU long names) for bundles. Written here rather
// than taken from tar-stream so the reader can refuse what a general extractor tolerates (bad checksums,
// links, base-256 sizes, global headers, data after the end marker) and can hash payload chunks in place.

export const BLOCK = 512;

export type EntryType = 'file' | 'pax' | 'gnuLongName' | 'other';

export interface TarHeader {
  name: string;
  size: number;
  type: EntryType;
  /** The raw typeflag, for error messages. */
  typeflag: string;
  mtime: number;
}

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

/** One ustar header block for a regular file (or a pax record block when `typeflag` is 'x'). */
export function encodeTarHeader(entry: { name: string; size: number; mtime?: number; mode?: number; typeflag?: string }): Buffer {
  const block = Buffer.alloc(BLOCK);
  block.write(entry.name, 0, 100, 'utf8');
  block.write(octal(entry.mode ?? 0o644, 8), 100, 'ascii');
  block.write(octal(0, 8), 108, 'ascii');
  block.write(octal(0, 8), 116, 'ascii');
  block.write(octal(entry.size, 12), 124, 'ascii');
  block.write(octal(entry.mtime ?? 0, 12), 136, 'ascii');
  block.write('        ', 148, 'ascii');
  block.write(entry.typeflag ?? '0', 156, 'ascii');
  block.write('ustar\u000000', 257, 'ascii');
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return block;
}

/** Zero bytes that complete the 512-byte block after `size` bytes of data. */
export function paddingFor(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK - rest);
}

/** A pax extended header (typeflag 'x') carrying `path`, for names longer than ustar's 100 bytes. */
export function encodePaxPath(name: string, mtime: number): Buffer[] {
  const body = ` path=${name}\n`;
  // The record length counts its own decimal digits.
  const bodyLength = Buffer.byteLength(body);
  let digits = String(bodyLength).length;
  while (String(bodyLength + digits).length !== digits) digits += 1;
  const record = Buffer.from(`${bodyLength + digits}${body}`, 'utf8');
  return [encodeTarHeader({ name: 'PaxHeader', size: record.length, mtime, typeflag: 'x' }), record, paddingFor(record.length)];
}

function field(block: Buffer, start: number, length: number): string {
  const raw = block.subarray(start, start + length);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? length : end).toString('utf8');
}

function parseOctal(block: Buffer, start: number, length: number, what: string): number {
  if ((block[start]! & 0x80) !== 0) throw new OtaError('BUNDLE_MALFORMED', `tar header ${what}: base-256 numbers are not accepted`);
  const text = field(block, start, length).trim();
  if (!/^[0-7]{1,12}$/.test(text)) throw new OtaError('BUNDLE_MALFORMED', `tar header ${what}: ${JSON.stringify(text)} is not an octal number`);
  return Number.parseInt(text, 8);
}

export function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i += 1) if (block[i] !== 0) return false;
  return true;
}

export function decodeTarHeader(block: Buffer): TarHeader {
  const magic = block.subarray(257, 263).toString('latin1');
  if (magic !== 'ustar\u0000' && magic !== 'ustar ') throw new OtaError('BUNDLE_MALFORMED', 'tar header: no ustar magic');
  const stored = parseOctal(block, 148, 8, 'checksum');
  let sum = 0;
  for (let i = 0; i < BLOCK; i += 1) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  if (sum !== stored) throw new OtaError('BUNDLE_MALFORMED', `tar header: checksum ${stored} does not match computed ${sum}`);
  const typeflag = String.fromCharCode(block[156]!);
  const name = field(block, 0, 100);
  const prefix = magic === 'ustar\u0000' ? field(block, 345, 155) : '';
  const type: EntryType = typeflag === '0' || typeflag === '\0' ? 'file' : typeflag === 'x' ? 'pax' : typeflag === 'L' ? 'gnuLongName' : 'other';
  return {
    name: prefix ? `${prefix}/${name}` : name,
    size: parseOctal(block, 124, 12, 'size'),
    type,
    typeflag: typeflag === '\0' ? '\\0' : typeflag,
    mtime: parseOctal(block, 136, 12, 'mtime'),
  };
}

/** pax records: "<len> <key>=<value>\n" repeated. Only path and size change how we read; others are ignored. */
export function parsePaxRecords(data: Buffer): { path?: string; size?: number } {
  const out: { path?: string; size?: number } = {};
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    const length = space === -1 ? Number.NaN : Number(data.subarray(offset, space).toString('ascii'));
    if (!Number.isSafeInteger(length) || length <= 0 || offset + length > data.length || data[offset + length - 1] !== 0x0a) {
      throw new OtaError('BUNDLE_MALFORMED', 'tar pax header: malformed record');
    }
    const record = data.subarray(space + 1, offset + length - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq === -1) throw new OtaError('BUNDLE_MALFORMED', 'tar pax header: record without "="');
    const key = record.slice(0, eq);
    const value = record.slice(eq + 1);
    if (key === 'path') out.path = value;
    if (key === 'size') {
      if (!/^\d{1,15}$/.test(value)) throw new OtaError('BUNDLE_MALFORMED', 'tar pax header: size is not a number');
      out.size = Number(value);
    }
    if (key === 'linkpath') throw new OtaError('BUNDLE_ENTRY_TYPE_REFUSED', 'tar pax header: linkpath records are refused');
    offset += length;
  }
  return out;
}

/**
 * The next member's header with pax / GNU long-name records folded in, or undefined at the end-of-archive
 * marker. The caller must then consume exactly `size` bytes and call `skipPadding`.
 */
export async function nextTarEntry(cursor: ByteCursor): Promise<TarHeader | undefined> {
  let pendingPath: string | undefined;
  let pendingSize: number | undefined;
  for (;;) {
    const block = await cursor.exact(BLOCK);
    if (!block) throw new OtaError('BUNDLE_TRUNCATED', 'bundle: ends before the end-of-archive marker');
    if (isZeroBlock(block)) {
      const second = await cursor.exact(BLOCK);
      if (!second) throw new OtaError('BUNDLE_TRUNCATED', 'bundle: ends inside the end-of-archive marker');
      if (!isZeroBlock(second)) throw new OtaError('BUNDLE_MALFORMED', 'bundle: a zero block followed by a non-zero block');
      return undefined;
    }
    const header = decodeTarHeader(block);
    if (header.type !== 'pax' && header.type !== 'gnuLongName') {
      return { ...header, name: pendingPath ?? header.name, size: pendingSize ?? header.size };
    }
    if (header.size > 64 * 1024) throw new OtaError('BUNDLE_TOO_LARGE', `bundle: ${header.type} header of ${header.size} bytes`);
    const data = await readPadded(cursor, header.size);
    if (header.type === 'gnuLongName') {
      pendingPath = data.toString('utf8').replace(/\0+$/, '');
    } else {
      const pax = parsePaxRecords(data);
      pendingPath = pax.path ?? pendingPath;
      pendingSize = pax.size ?? pendingSize;
    }
  }
}

/** An entry's data (copied out of the stream's buffers) followed by its padding. */
export async function readPadded(cursor: ByteCursor, size: number): Promise<Buffer> {
  const data = await cursor.exact(size);
  if (!data) throw new OtaError('BUNDLE_TRUNCATED', 'bundle: ends inside an entry');
  const copy = Buffer.from(data);
  await skipPadding(cursor, size);
  return copy;
}

export async function skipPadding(cursor: ByteCursor, size: number): Promise<void> {
  const rest = size % BLOCK;
  if (rest !== 0 && !(await cursor.skip(BLOCK - rest))) throw new OtaError('BUNDLE_TRUNCATED', 'bundle: ends inside entry padding');
}
