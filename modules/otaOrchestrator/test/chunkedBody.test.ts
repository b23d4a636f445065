import { describe, expect, it } from 'vitest';
import { ChunkedBodyDecoder } from '../src/chunkedBody.ts';

const wire = Buffer.from('5;name=value\r\nhello\r\n1\r\n \r\nB\r\nchunked wor\r\n2 \r\nld\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT', 'latin1');
const payload = 'hello chunked world';

function decode(pieces: Buffer[]): { text: string; used: number; done: boolean } {
  const decoder = new ChunkedBodyDecoder();
  const out: Buffer[] = [];
  let used = 0;
  for (const piece of pieces) {
    // The decoder hands out views of the piece: copy, as a caller reusing its buffer would.
    used += decoder.push(piece, (chunk) => out.push(Buffer.from(chunk)));
  }
  return { text: Buffer.concat(out).toString('latin1'), used, done: decoder.done };
}

describe('ChunkedBodyDecoder', () => {
  it('decodes a body split at every possible place, with extensions and trailers, and stops at its end', () => {
    for (let cut = 0; cut <= wire.length; cut += 1) {
      for (let cut2 = cut; cut2 <= wire.length; cut2 += 7) {
        const result = decode([wire.subarray(0, cut), wire.subarray(cut, cut2), wire.subarray(cut2)]);
        expect(result).toEqual({ text: payload, used: wire.length - 'NEXT'.length, done: true });
      }
    }
  });

  it('decodes a body fed one byte at a time', () => {
    const bytes = [...wire].map((b) => Buffer.from([b]));
    expect(decode(bytes)).toMatchObject({ text: payload, done: true });
  });

  it.each([
    ['a size that is not hex', 'zz\r\nhello\r\n0\r\n\r\n', /bad chunk size/],
    ['chunk data longer than its size', '3\r\nhello\r\n0\r\n\r\n', /longer than its size/],
    ['an endless size line', `${'1'.repeat(5000)}`, /longer than 4096/],
  ])('refuses %s', (_name, text, error) => {
    expect(() => decode([Buffer.from(text, 'latin1')])).toThrow(error);
  });

  it('is not done before the last chunk', () => {
    expect(decode([Buffer.from('5\r\nhello\r\n', 'latin1')])).toMatchObject({ text: 'hello', done: false });
  });
});
