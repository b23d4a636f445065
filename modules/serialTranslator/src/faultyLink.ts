import type { ByteLink, LinkState } from './link.ts';

/** Per-byte fault probabilities for one direction of the line. */
export interface LineFaults {
  drop?: number;
  duplicate?: number;
  corrupt?: number;
}

export interface FaultyLinkOptions {
  seed: number;
  /** Faults on bytes this side writes. */
  tx?: LineFaults;
  /** Faults on bytes this side receives. */
  rx?: LineFaults;
}

export interface FaultCounts {
  dropped: number;
  duplicated: number;
  corrupted: number;
}

/** mulberry32: small, fast and seedable, so a failing fault pattern can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Wraps a link and damages the bytes crossing it, the way a noisy or overrun UART does. */
export class FaultyLink implements ByteLink {
  readonly #inner: ByteLink;
  readonly #random: () => number;
  readonly #tx: LineFaults;
  readonly #rx: LineFaults;
  readonly counts: FaultCounts = { dropped: 0, duplicated: 0, corrupted: 0 };

  constructor(inner: ByteLink, options: FaultyLinkOptions) {
    this.#inner = inner;
    this.#random = seededRandom(options.seed);
    this.#tx = options.tx ?? {};
    this.#rx = options.rx ?? {};
  }

  get state(): LinkState {
    return this.#inner.state;
  }

  #damage(bytes: Uint8Array, faults: LineFaults): Uint8Array {
    const { drop = 0, duplicate = 0, corrupt = 0 } = faults;
    if (!drop && !duplicate && !corrupt) return bytes;
    const out: number[] = [];
    for (const byte of bytes) {
      const r = this.#random();
      if (r < drop) {
        this.counts.dropped++;
      } else if (r < drop + duplicate) {
        this.counts.duplicated++;
        out.push(byte, byte);
      } else if (r < drop + duplicate + corrupt) {
        this.counts.corrupted++;
        // Flip one to seven bits so the byte is always different.
        out.push(byte ^ (1 + Math.floor(this.#random() * 255)));
      } else {
        out.push(byte);
      }
    }
    return Uint8Array.from(out);
  }

  write(bytes: Uint8Array): Promise<void> {
    return this.#inner.write(this.#damage(bytes, this.#tx));
  }

  onData(listener: (bytes: Uint8Array) => void): () => void {
    return this.#inner.onData((bytes) => listener(this.#damage(bytes, this.#rx)));
  }

  onState(listener: (state: LinkState) => void): () => void {
    return this.#inner.onState(listener);
  }

  whenUp(timeoutMs: number): Promise<void> {
    return this.#inner.whenUp(timeoutMs);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}
