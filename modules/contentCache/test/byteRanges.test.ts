import { describe, expect, it } from 'vitest';
import { decideRanges, ifRangeHolds, noneMatchHits } from '../src/byteRanges.ts';

describe('decideRanges', () => {
  const size = 1000;
  it.each([
    ['bytes=0-99', { kind: 'partial', ranges: [{ start: 0, end: 99 }] }],
    ['bytes=900-', { kind: 'partial', ranges: [{ start: 900, end: 999 }] }],
    ['bytes=-100', { kind: 'partial', ranges: [{ start: 900, end: 999 }] }],
    ['bytes=-5000', { kind: 'partial', ranges: [{ start: 0, end: 999 }] }],
    ['bytes=990-5000', { kind: 'partial', ranges: [{ start: 990, end: 999 }] }],
    ['bytes=0-0, 10-19', { kind: 'partial', ranges: [{ start: 0, end: 0 }, { start: 10, end: 19 }] }],
    ['BYTES=1-1', { kind: 'partial', ranges: [{ start: 1, end: 1 }] }],
    ['bytes=1000-', { kind: 'unsatisfiable' }],
    ['bytes=-0', { kind: 'unsatisfiable' }],
    ['bytes=5000-6000, 2000-', { kind: 'unsatisfiable' }],
  ])('%s', (header, expected) => {
    expect(decideRanges(header, size, 256)).toEqual(expected);
  });

  it.each([
    ['overlapping', 'bytes=0-100,50-150'],
    ['adding up past the object', 'bytes=0-999,-1'],
    ['malformed: no unit', '0-10'],
    ['malformed: other unit', 'items=0-10'],
    ['malformed: reversed', 'bytes=10-5'],
    ['malformed: letters', 'bytes=a-b'],
    ['malformed: empty spec', 'bytes=0-1,'],
    ['malformed: bare dash', 'bytes=-'],
    ['malformed: negative', 'bytes=--5'],
    ['number too long', `bytes=0-${'9'.repeat(40)}`],
    ['too many ranges', `bytes=${Array.from({ length: 300 }, (_, i) => `${i}-${i}`).join(',')}`],
    ['huge header', `bytes=0-1${','.repeat(20000)}`],
  ])('answers %s with the whole object', (_name, header) => {
    expect(decideRanges(header, size, 256)).toEqual({ kind: 'full' });
  });

  it('allows 64 disjoint ranges', () => {
    const header = `bytes=${Array.from({ length: 64 }, (_, i) => `${i * 10}-${i * 10 + 4}`).join(',')}`;
    const d = decideRanges(header, size, 256);
    expect(d.kind === 'partial' && d.ranges.length).toBe(64);
  });
});

describe('validators', () => {
  it('If-None-Match compares weakly and knows *', () => {
    expect(noneMatchHits('"a", W/"b"', '"b"')).toBe(true);
    expect(noneMatchHits('*', '"x"')).toBe(true);
    expect(noneMatchHits('"c"', '"b"')).toBe(false);
  });
  it('If-Range compares strongly and never matches a date', () => {
    expect(ifRangeHolds('"b"', '"b"')).toBe(true);
    expect(ifRangeHolds('W/"b"', '"b"')).toBe(false);
    expect(ifRangeHolds('Tue, 15 Nov 1994 08:12:31 GMT', '"b"')).toBe(false);
    expect(ifRangeHolds(undefined, '"b"')).toBe(true);
  });
});
