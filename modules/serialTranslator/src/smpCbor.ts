// The CBOR subset SMP uses, encoded the way devices expect it: definite lengths, shortest-form heads, text keys,
// no tags and no floats (zcbor- and tinycbor-based servers reject or misread them). Decoding is more lenient
// because devices differ: indefinite lengths are accepted, tags skipped, floats read.

export type CborValue = number | bigint | string | Uint8Array | boolean | null | undefined | CborValue[] | CborMap;
export interface CborMap {
  [key: string]: CborValue;
}

export class CborError extends Error {}

function head(major: number, value: number | bigint, out: number[]): void {
  const v = BigInt(value);
  const m = major << 5;
  if (v < 24n) out.push(m | Number(v));
  else if (v < 0x100n) out.push(m | 24, Number(v));
  else if (v < 0x10000n) out.push(m | 25, Number(v >> 8n), Number(v & 0xffn));
  else if (v < 0x100000000n) {
    out.push(m | 26);
    for (let s = 24n; s >= 0n; s -= 8n) out.push(Number((v >> s) & 0xffn));
  } else if (v < 0x10000000000000000n) {
    out.push(m | 27);
    for (let s = 56n; s >= 0n; s -= 8n) out.push(Number((v >> s) & 0xffn));
  } else throw new CborError(`integer ${v} does not fit 64 bits`);
}

function encodeInto(value: CborValue, out: number[]): void {
  if (typeof value === 'number' || typeof value === 'bigint') {
    if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new CborError(`SMP carries integers only, got ${value}`);
    const v = BigInt(value);
    if (v >= 0n) head(0, v, out);
    else head(1, -1n - v, out);
  } else if (typeof value === 'string') {
    const bytes = Buffer.from(value, 'utf8');
    head(3, bytes.length, out);
    for (const b of bytes) out.push(b);
  } else if (value instanceof Uint8Array) {
    head(2, value.length, out);
    for (const b of value) out.push(b);
  } else if (value === true) out.push(0xf5);
  else if (value === false) out.push(0xf4);
  else if (value === null) out.push(0xf6);
  else if (value === undefined) throw new CborError('undefined has no place in an SMP request');
  else if (Array.isArray(value)) {
    head(4, value.length, out);
    for (const item of value) encodeInto(item, out);
  } else {
    // Undefined members are left out, so callers can write optional fields inline.
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    head(5, entries.length, out);
    for (const [k, v] of entries) {
      encodeInto(k, out);
      encodeInto(v, out);
    }
  }
}

export function encodeCbor(value: CborValue): Uint8Array {
  const out: number[] = [];
  encodeInto(value, out);
  return Uint8Array.from(out);
}

/** Size of the CBOR head for a length or unsigned value: used to size upload chunks exactly. */
export function cborHeadSize(value: number): number {
  if (value < 24) return 1;
  if (value < 0x100) return 2;
  if (value < 0x10000) return 3;
  if (value < 0x100000000) return 5;
  return 9;
}

const BREAK = Symbol('break');

function halfFloat(bits: number): number {
  const exp = (bits >> 10) & 0x1f;
  const mant = bits & 0x3ff;
  const sign = bits & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
const MAX_DEPTH = 16;

class Reader {
  pos = 0;
  readonly bytes: Uint8Array;
  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  byte(): number {
    if (this.pos >= this.bytes.length) throw new CborError('truncated CBOR');
    return this.bytes[this.pos++]!;
  }

  take(n: number): Uint8Array {
    if (n > this.bytes.length - this.pos) throw new CborError('truncated CBOR');
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** Returns the argument of a head; -1 for an indefinite length. */
  argument(info: number): number | bigint {
    if (info < 24) return info;
    if (info === 24) return this.byte();
    if (info === 25) return (this.byte() << 8) | this.byte();
    if (info === 26) return ((this.byte() << 24) >>> 0) + (this.byte() << 16) + (this.byte() << 8) + this.byte();
    if (info === 27) {
      let v = 0n;
      for (let i = 0; i < 8; i++) v = (v << 8n) | BigInt(this.byte());
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    if (info === 31) return -1;
    throw new CborError(`reserved additional info ${info}`);
  }

  length(info: number): number {
    const n = this.argument(info);
    if (typeof n === 'bigint' || n > this.bytes.length) throw new CborError('CBOR length beyond the message');
    return n;
  }

  value(depth: number): CborValue | typeof BREAK {
    if (depth > MAX_DEPTH) throw new CborError('CBOR nested too deeply');
    const initial = this.byte();
    const major = initial >> 5;
    const info = initial & 0x1f;
    switch (major) {
      case 0:
        return this.argument(info);
      case 1: {
        const n = this.argument(info);
        return typeof n === 'bigint' ? -1n - n : -1 - n;
      }
      case 2:
      case 3: {
        let bytes: Uint8Array;
        if (info === 31) {
          const parts: Uint8Array[] = [];
          for (;;) {
            const part = this.value(depth + 1);
            if (part === BREAK) break;
            if (!(part instanceof Uint8Array) && typeof part !== 'string') throw new CborError('bad chunk in indefinite string');
            parts.push(typeof part === 'string' ? Buffer.from(part, 'utf8') : part);
          }
          bytes = Buffer.concat(parts);
        } else bytes = this.take(this.length(info));
        return major === 2 ? new Uint8Array(bytes) : Buffer.from(bytes).toString('utf8');
      }
      case 4: {
        const items: CborValue[] = [];
        const n = info === 31 ? Infinity : this.length(info);
        for (let i = 0; i < n; i++) {
          const item = this.value(depth + 1);
          if (item === BREAK) {
            if (n === Infinity) break;
            throw new CborError('unexpected break');
          }
          items.push(item);
        }
        return items;
      }
      case 5: {
        const map: CborMap = {};
        const n = info === 31 ? Infinity : this.length(info);
        for (let i = 0; i < n; i++) {
          const key = this.value(depth + 1);
          if (key === BREAK) {
            if (n === Infinity) break;
            throw new CborError('unexpected break');
          }
          const val = this.value(depth + 1);
          if (val === BREAK) throw new CborError('map key without value');
          // Non-text keys do not occur in SMP; stringify rather than fail so the rest of the reply stays readable.
          map[typeof key === 'string' ? key : typeof key === 'number' || typeof key === 'bigint' ? key.toString() : JSON.stringify(key)] = val;
        }
        return map;
      }
      case 6:
        this.argument(info);
        return this.value(depth + 1);
      default:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        if (info === 23) return undefined;
        if (info === 25) return halfFloat(Buffer.from(this.take(2)).readUInt16BE(0));
        if (info === 26) return Buffer.from(this.take(4)).readFloatBE(0);
        if (info === 27) return Buffer.from(this.take(8)).readDoubleBE(0);
        if (info === 31) return BREAK;
        if (info === 24) return this.byte();
        return info;
    }
  }
}

/** Decodes exactly one CBOR item that must fill `bytes`. */
export function decodeCbor(bytes: Uint8Array): CborValue {
  const reader = new Reader(bytes);
  const value = reader.value(0);
  if (value === BREAK) throw new CborError('stray break');
  if (reader.pos !== bytes.length) throw new CborError(`${bytes.length - reader.pos} trailing bytes after CBOR item`);
  return value;
}
