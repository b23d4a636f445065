import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { memoryLinkPair } from '../src/memoryLink.ts';
import { PacedLink } from '../src/pacedLink.ts';
import { FaultyLink, seededRandom } from '../src/faultyLink.ts';

function collect(link: { onData(fn: (b: Uint8Array) => void): () => void }): number[] {
  const got: number[] = [];
  link.onData((b) => got.push(...b));
  return got;
}

describe('PacedLink', () => {
  it('delivers every byte in order, never faster than the line rate, in both directions', async () => {
    const [a, b] = memoryLinkPair();
    const paced = new PacedLink(a, { baud: 115200 });
    const atDevice = collect(b);
    const atHost = collect(paced);
    const data = new Uint8Array(2304).map((_, i) => i & 0xff);
    const started = performance.now();
    await paced.write(data);
    // 2304 bytes at 11520 bytes/s need 200 ms on the wire. Only a lower bound: a loaded machine may be slower.
    expect(performance.now() - started).toBeGreaterThanOrEqual(195);
    await new Promise((resolve) => setImmediate(resolve));
    expect(atDevice).toEqual([...data]);

    const back = performance.now();
    await b.write(data.subarray(0, 1152));
    for (let i = 0; i < 200 && atHost.length < 1152; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    expect(atHost).toEqual([...data.subarray(0, 1152)]);
    expect(performance.now() - back).toBeGreaterThanOrEqual(95);
    await paced.close();
    await b.close();
  });
});

describe('FaultyLink', () => {
  it('replays the same damage for the same seed', async () => {
    const run = async () => {
      const [a, b] = memoryLinkPair();
      const faulty = new FaultyLink(a, { seed: 42, tx: { drop: 0.01, duplicate: 0.01, corrupt: 0.01 } });
      const got = collect(b);
      await faulty.write(new Uint8Array(10_000).fill(0x55));
      await new Promise((resolve) => setImmediate(resolve));
      await faulty.close();
      return { got, counts: { ...faulty.counts } };
    };
    const first = await run();
    const second = await run();
    expect(first).toEqual(second);
    expect(first.counts.dropped).toBeGreaterThan(50);
    expect(first.counts.duplicated).toBeGreaterThan(50);
    expect(first.counts.corrupted).toBeGreaterThan(50);
    expect(first.got.length).toBe(10_000 - first.counts.dropped + first.counts.duplicated);
    expect(first.got.filter((x) => x !== 0x55)).toHaveLength(first.counts.corrupted);
  });

  it('draws uniformly enough from the seeded generator', () => {
    const random = seededRandom(1);
    const draws = Array.from({ length: 10_000 }, random);
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...draws)).toBeLessThan(1);
    const mean = draws.reduce((s, x) => s + x, 0) / draws.length;
    expect(mean).toBeGreaterThan(0.48);
    expect(mean).toBeLessThan(0.52);
  });
});
