import { SerialPort } from 'serialport';
import { DelimiterParser } from '@serialport/parser-delimiter';
import { LinkDownError } from './link.ts';
import { ReconnectingLink } from './reconnectingLink.ts';

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
export class SerialPortLink extends ReconnectingLink {
  readonly #options: SerialPortLinkOptions;
  #port: SerialPort | undefined;

  constructor(options: SerialPortLinkOptions) {
    super({ initialMs: options.reopenDelayMs ?? 50, maxMs: options.maxReopenDelayMs ?? 1000 });
    this.#options = options;
  }

  /** Opens the port; resolves once it is open or rejects after `timeoutMs` of failed attempts. */
  static async open(options: SerialPortLinkOptions, timeoutMs = 5000): Promise<SerialPortLink> {
    const link = new SerialPortLink(options);
    await link.start(timeoutMs);
    return link;
  }

  get reopenCount(): number {
    return this.retries;
  }

  protected attempt(): void {
    const port = new SerialPort({ path: this.#options.path, baudRate: this.#options.baudRate, autoOpen: false });
    port.open((error) => {
      if (error) {
        this.retry();
        return;
      }
      if (this.state === 'closed') {
        port.close();
        return;
      }
      this.#port = port;
      const lines = port.pipe(new DelimiterParser({ delimiter: '\n', includeDelimiter: true }));
      lines.on('data', (line: Buffer) => this.signals.emitData(new Uint8Array(line)));
      port.once('close', () => this.#lost(port));
      port.on('error', () => this.#lost(port));
      this.connected();
    });
  }

  #lost(port: SerialPort): void {
    if (this.#port !== port) return;
    this.#port = undefined;
    if (port.isOpen) port.close(() => undefined);
    this.retry();
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

  protected release(): Promise<void> {
    const port = this.#port;
    this.#port = undefined;
    if (!port?.isOpen) return Promise.resolve();
    return new Promise((resolve) => port.close(() => resolve()));
  }
}
