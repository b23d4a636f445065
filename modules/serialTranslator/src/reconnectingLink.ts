import { LinkSignals } from './link.ts';
import type { ByteLink, LinkState } from './link.ts';

// What a link to a device that can go away has in common, whatever carries the bytes: it tries to (re)connect
// with a doubling, bounded delay while not closed, reports up/down, and hands received bytes to its listeners.
// A subclass says how to make one attempt, when it succeeded or was lost, and how to write and let go.

export interface ReconnectDelays {
  /** First delay after a failed attempt or a lost connection; doubles up to maxMs. */
  initialMs: number;
  maxMs: number;
}

export abstract class ReconnectingLink implements ByteLink {
  protected readonly signals = new LinkSignals('down');
  readonly #delays: ReconnectDelays;
  #delay: number;
  #timer: NodeJS.Timeout | undefined;
  /** Attempts made after the first one. */
  retries = 0;

  constructor(delays: ReconnectDelays) {
    this.#delays = delays;
    this.#delay = delays.initialMs;
  }

  get state(): LinkState {
    return this.signals.current;
  }

  /** Makes the first attempt and waits until the link is up; closes it when it does not come up in time. */
  protected async start(timeoutMs: number): Promise<void> {
    this.attempt();
    try {
      await this.whenUp(timeoutMs);
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  /** One connection attempt; ends by calling connected() or retry(). */
  protected abstract attempt(): void;

  /** Lets go of the current connection, if any (the link is closed already). */
  protected abstract release(): Promise<void>;

  abstract write(bytes: Uint8Array): Promise<void>;

  protected connected(): void {
    this.#delay = this.#delays.initialMs;
    this.signals.setState('up');
  }

  /** A failed attempt or a lost connection: down, and another attempt after the current delay. */
  protected retry(): void {
    this.signals.setState('down');
    if (this.state === 'closed' || this.#timer) return;
    const delay = this.#delay;
    this.#delay = Math.min(this.#delay * 2, this.#delays.maxMs);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.retries++;
      if (this.state !== 'closed') this.attempt();
    }, delay);
  }

  onData(listener: (bytes: Uint8Array) => void): () => void {
    return this.signals.onData(listener);
  }

  onState(listener: (state: LinkState) => void): () => void {
    return this.signals.onState(listener);
  }

  whenUp(timeoutMs: number): Promise<void> {
    return this.signals.whenUp(timeoutMs);
  }

  close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.signals.setState('closed');
    return this.release();
  }
}
