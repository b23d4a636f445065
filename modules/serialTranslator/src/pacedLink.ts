import { performance } from 'node:perf_hooks';
import { LinkDownError, LinkSignals } from './link.ts';
import type { ByteLink, LinkState } from './link.ts';

export interface PacedLinkOptions {
  baud: number;
  /** Bits on the wire per byte: 10 for 8N1 (start + 8 data + stop). */
  bitsPerByte?: number;
  /** Largest piece delivered at once; smaller is smoother but costs more timers. */
  sliceBytes?: number;
}

/**
 * One direction of a UART: bytes leave no faster than baud / bitsPerByte. The schedule runs on a virtual
 * clock, so a timer that fires late is caught up on the next slice instead of slowing the line down for good,
 * and the average rate is exact.
 */
class PacedDirection {
  readonly #bytesPerMs: number;
  readonly #slice: number;
  readonly #deliver: (bytes: Uint8Array) => void;
  readonly #queue: { due: number; bytes: Uint8Array; done?: () => void }[] = [];
  #lineFreeAt = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(bytesPerSecond: number, slice: number, deliver: (bytes: Uint8Array) => void) {
    this.#bytesPerMs = bytesPerSecond / 1000;
    this.#slice = slice;
    this.#deliver = deliver;
  }

  push(bytes: Uint8Array): Promise<void> {
    return new Promise((resolve) => {
      const now = performance.now();
      if (this.#lineFreeAt < now) this.#lineFreeAt = now;
      for (let off = 0; off < bytes.length; off += this.#slice) {
        const piece = bytes.subarray(off, off + this.#slice);
        this.#lineFreeAt += piece.length / this.#bytesPerMs;
        const last = off + this.#slice >= bytes.length;
        this.#queue.push({ due: this.#lineFreeAt, bytes: piece, ...(last ? { done: resolve } : {}) });
      }
      if (bytes.length === 0) resolve();
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#timer) return;
    const now = performance.now();
    while (this.#queue.length && this.#queue[0]!.due <= now) {
      const item = this.#queue.shift()!;
      this.#deliver(item.bytes);
      item.done?.();
    }
    if (this.#queue.length) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#pump();
      }, Math.max(0, this.#queue[0]!.due - now));
    }
  }

  stop(): void {
    clearTimeout(this.#timer);
    for (const item of this.#queue.splice(0)) item.done?.();
  }
}

/** Wraps a fast link (pty, memory) so it behaves like a UART at a given baud rate, in both directions. */
export class PacedLink implements ByteLink {
  readonly #inner: ByteLink;
  readonly #signals = new LinkSignals('up');
  readonly #tx: PacedDirection;
  readonly #rx: PacedDirection;
  readonly #unsubscribe: (() => void)[];
  readonly bytesPerSecond: number;

  constructor(inner: ByteLink, options: PacedLinkOptions) {
    this.#inner = inner;
    this.bytesPerSecond = options.baud / (options.bitsPerByte ?? 10);
    const slice = options.sliceBytes ?? 32;
    this.#tx = new PacedDirection(this.bytesPerSecond, slice, (bytes) => {
      inner.write(bytes).catch(() => {
        // A write lost while the inner link is down is a byte lost on the line; the SMP client retries.
      });
    });
    this.#rx = new PacedDirection(this.bytesPerSecond, slice, (bytes) => this.#signals.emitData(bytes));
    this.#signals.current = inner.state;
    this.#unsubscribe = [
      inner.onData((bytes) => void this.#rx.push(Uint8Array.from(bytes))),
      inner.onState((state) => this.#signals.setState(state)),
    ];
  }

  get state(): LinkState {
    return this.#signals.current;
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.state !== 'up') return Promise.reject(new LinkDownError(`paced link is ${this.state}`));
    return this.#tx.push(Uint8Array.from(bytes));
  }

  onData(listener: (bytes: Uint8Array) => void): () => void {
    return this.#signals.onData(listener);
  }

  onState(listener: (state: LinkState) => void): () => void {
    return this.#signals.onState(listener);
  }

  whenUp(timeoutMs: number): Promise<void> {
    return this.#signals.whenUp(timeoutMs);
  }

  async close(): Promise<void> {
    for (const off of this.#unsubscribe) off();
    this.#tx.stop();
    this.#rx.stop();
    this.#signals.setState('closed');
    await this.#inner.close();
  }
}
