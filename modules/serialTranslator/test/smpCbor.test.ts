import { describe, expect, it } from 'vitest';
import { CborError, decodeCbor, encodeCbor } from '../src/smpCbor.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('CBOR encoding, byte for byte', () => {
  it('encodes the echo body', () => {
    expect(hex(encodeCbor({ d: 'hello' }))).toBe('a1' + '6164' + '65' + '68656c6c6f');
  });

  it('encodes an empty map for reads', () => {
    expect(hex(encodeCbor({}))).toBe('a0');
  });

  it('uses the shortest integer heads at every boundary', () => {
    const cases: [number | bigint, string][] = [
      [0, '00'],
      [23, '17'],
      [24, '1818'],
      [255, '18ff'],
      [256, '190100'],
      [65535, '19ffff'],
      [65536, '1a00010000'],
      [4294967295, '1affffffff'],
      [4294967296, '1b0000000100000000'],
      [-1, '20'],
      [-24, '37'],
      [-25, '3818'],
      [-500, '3901f3'],
      [18446744073709551615n, '1bffffffffffffffff'],
    ];
    for (const [value, expected] of cases) expect(hex(encodeCbor(value)), String(value)).toBe(expected);
  });

  it('encodes the first upload chunk as mcumgr devices expect it', () => {
    const sha = new Uint8Array(32).fill(0xab);
    const body = encodeCbor({ image: 0, len: 70000, off: 0, sha, data: Uint8Array.of(1, 2) });
    expect(hex(body)).toBe(
      'a5' +
        '65696d616765' + '00' + // "image": 0
        '636c656e' + '1a00011170' + // "len": 70000
        '636f6666' + '00' + // "off": 0
        '63736861' + '5820' + 'ab'.repeat(32) + // "sha": bstr(32)
        '6464617461' + '420102', // "data": h'0102'
    );
  });

  it('encodes bools, byte string lengths over 23 and leaves undefined members out', () => {
    expect(hex(encodeCbor({ confirm: true, hash: new Uint8Array(24), skip: undefined }))).toBe(
      'a2' + '67636f6e6669726d' + 'f5' + '6468617368' + '5818' + '00'.repeat(24),
    );
    expect(hex(encodeCbor([false, null]))).toBe('82f4f6');
  });

  it('refuses values SMP cannot carry instead of emitting floats', () => {
    expect(() => encodeCbor(1.5)).toThrow(CborError);
  });
});

describe('CBOR decoding of device replies', () => {
  it('reads a v2 error reply', () => {
    expect(decodeCbor(Buffer.from('a163657272a26567726f75700162726306', 'hex'))).toEqual({ err: { group: 1, rc: 6 } });
  });

  it('accepts indefinite-length maps and arrays, tags and floats', () => {
    // {_ "images": [_ {"slot": 0}], "f": 1.5 (half), "t": 1(0) } as tinycbor-era firmware may send it.
    const reply = Buffer.from('bf66696d616765739fa164736c6f7400ff6166f93e006174c100ff', 'hex');
    expect(decodeCbor(reply)).toEqual({ images: [{ slot: 0 }], f: 1.5, t: 0 });
  });

  it('rejects truncated input and trailing bytes', () => {
    expect(() => decodeCbor(Buffer.from('a16164', 'hex'))).toThrow(CborError);
    expect(() => decodeCbor(Buffer.from('a0a0', 'hex'))).toThrow(CborError);
    expect(() => decodeCbor(Buffer.from('5a7fffffff', 'hex'))).toThrow(CborError);
  });

  it('round-trips everything the encoder emits', () => {
    const value = { a: [1, -2, 'x', Uint8Array.of(9)], b: { c: true, d: 2 ** 40 } };
    expect(decodeCbor(encodeCbor(value))).toEqual(value);
  });
});
