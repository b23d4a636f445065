// The byte link the SMP client talks over. It knows nothing of SMP: a serial port, a pty, a TCP socket or an
// in-memory pipe all look the same, so the protocol code is tested without hardware.

export type LinkState = 'up' | 'down' | 'closed';

export interface ByteLink {
  /** Resolves once the bytes have left (drained to the port, or paced onto the simulated line). */
  write(bytes: Uint8Array): Promise<void>;
  /** Subscribes to received bytes; returns the unsubscribe function. */
  onData(listener: (bytes: Uint8Array) => void): () => void;
  /** Subscribes to up/down changes (cable pulled, device re-enumerated); returns the unsubscribe function. */
  onState(listener: (state: LinkState) => void): () => void;
  readonly state: LinkState;
  /** Resolves when the link is up, rejects after `timeoutMs` or when it is closed. */
  whenUp(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export class LinkDownError extends Error {
  override name = 'LinkDownError';
}

/** Listener bookkeeping and whenUp() shared by the link implementations. */
export class LinkSignals {
  readonly #data = new Set<(bytes: Uint8Array) => void>();
  readonly #state = new Set<(state: LinkState) => void>();
  current: LinkState;

  constructor(initial: LinkState) {
    this.current = initial;
  }

  onData(listener: (bytes: Uint8Array) => void): () => void {
    this.#data.add(listener);
    return () => this.#data.delete(listener);
  }

  onState(listener: (state: LinkState) => void): () => void {
    this.#state.add(listener);
    return () => this.#state.delete(listener);
  }

  emitData(bytes: Uint8Array): void {
    for (const listener of [...this.#data]) listener(bytes);
  }

  setState(state: LinkState): void {
    if (this.current === state || this.current === 'closed') return;
    this.current = state;
    for (const listener of [...this.#state]) listener(state);
  }

  whenUp(timeoutMs: number): Promise<void> {
    if (this.current === 'up') return Promise.resolve();
    if (this.current === 'closed') return Promise.reject(new LinkDownError('link closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new LinkDownError(`link not up within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onState((state) => {
        if (state === 'down') return;
        clearTimeout(timer);
        off();
        if (state === 'up') resolve();
        else reject(new LinkDownError('link closed'));
      });
    });
  }
}
