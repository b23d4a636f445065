import { LinkDownError, LinkSignals } from './link.ts';
import type { ByteLink, LinkState } from './link.ts';

/** One end of an in-memory byte pipe. Delivery is asynchronous, as on any real transport. */
export class MemoryLink implements ByteLink {
  readonly #signals = new LinkSignals('up');
  peer: MemoryLink | undefined;

  get state(): LinkState {
    return this.#signals.current;
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.state !== 'up' || !this.peer) return Promise.reject(new LinkDownError('memory link closed'));
    const copy = Uint8Array.from(bytes);
    const peer = this.peer;
    setImmediate(() => {
      if (peer.state === 'up') peer.#signals.emitData(copy);
    });
    return Promise.resolve();
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

  close(): Promise<void> {
    this.#signals.setState('closed');
    return Promise.resolve();
  }
}

/** Two connected ends: what one writes, the other receives. */
export function memoryLinkPair(): [MemoryLink, MemoryLink] {
  const a = new MemoryLink();
  const b = new MemoryLink();
  a.peer = b;
  b.peer = a;
  return [a, b];
}
