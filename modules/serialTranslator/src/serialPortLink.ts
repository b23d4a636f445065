import { SerialPort } from 'serialport';
import { DelimiterParser } from '@serialport/parser-delimiter';
import { LinkDownError, LinkSignals } from './link.ts';
import type { ByteLink, LinkState } from './link.ts';

export interface SerialPortLinkOptions {
  /** Prefer /dev/serial/by-id/...: the name survives re-enumeration, /dev/ttyACMn does not. */
  path: string;
  baudRate: number;
  /** First reopen delay after the port goes away; doubles up to maxReopenDelayMs. */
  reopenDelayMs?: number;
  maxReopenDelayMs?: number;
}

/**
 * A serial port (or pty) that reopens its path when the device is unplugged or re-enumerates. Data is handed
 * on in whole lines, which is what the console transport is made of.
 */
export class SerialPortLink implements ByteLink {
  readonly #options: Required<SerialPortLinkOptions>;
  readonly #signals = new LinkSignals('down');
  #port: SerialPort | undefined;
  #reopenTimer: NodeJS.Timeout | undefined;
  #delay: number;
  reopenCount = 0;

  constructor(options: SerialPortLinkOptions) {
    this.#options = { reopenDelayMs: 50, maxReopenDelayMs: 1000, ...options };
    this.#delay = this.#options.reopenDelayMs;
  }

  /** Opens the port; resolves once it is open or rejects after `timeoutMs` of failed attempts. */
  static async open(options: SerialPortLinkOptions, timeoutMs = 5000): Promise<SerialPortLink> {
    const link = new SerialPortLink(options);
    link.#tryOpen();
    try {
      await link.whenUp(timeoutMs);
    } catch (error) {
      await link.close();
      throw error;
    }
    return link;
  }

  get state(): LinkState {
    return this.#signals.current;
  }

  #tryOpen(): void {
    if (this.state === 'closed') return;
    const port = new SerialPort({ path: this.#options.path, baudRate: this.#options.baudRate, autoOpen: false });
    port.open((error) => {
      if (error) {
        this.#scheduleReopen();
        return;
      }
      if (this.state === 'closed') {
        port.close();
        return;
      }
      this.#port = port;
      this.#delay = this.#options.reopenDelayMs;
      const lines = port.pipe(new DelimiterParser({ delimiter: '\n', includeDelimiter: true }));
      lines.on('data', (line: Buffer) => this.#signals.emitData(new Uint8Array(line)));
      port.once('close', () => this.#lost(port));
      port.on('error', () => this.#lost(port));
      this.#signals.setState('up');
    });
  }

  #lost(port: SerialPort): void {
    if (this.#port !== port) return;
    this.#port = undefined;
    if (port.isOpen) port.close(() => undefined);
    this.#signals.setState('down');
    this.#scheduleReopen();
  }

  #scheduleReopen(): void {
    if (this.state === 'closed' || this.#reopenTimer) return;
    const delay = this.#delay;
    this.#delay = Math.min(this.#delay * 2, this.#options.maxReopenDelayMs);
    this.#reopenTimer = setTimeout(() => {
      this.#reopenTimer = undefined;
      this.reopenCount++;
      this.#tryOpen();
    }, delay);
  }

  write(bytes: Uint8Array): Promise<void> {
    const port = this.#port;
    if (!port || this.state !== 'up') return Promise.reject(new LinkDownError(`${this.#options.path} is not open`));
    return new Promise((resolve, reject) => {
      port.write(Buffer.from(bytes), (error) => {
        if (error) reject(new LinkDownError(error.message));
      });
      port.drain((error) => (error ? reject(new LinkDownError(error.message)) : resolve()));
    });
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
    clearTimeout(this.#reopenTimer);
    this.#signals.setState('closed');
    const port = this.#port;
    this.#port = undefined;
    if (!port?.isOpen) return Promise.resolve();
    return new Promise((resolve) => port.close(() => resolve()));
  }
}
