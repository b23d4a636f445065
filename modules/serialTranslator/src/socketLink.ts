import net from 'node:net';
import { LinkDownError, LinkSignals } from './link.ts';
import type { ByteLink, LinkState } from './link.ts';

export type SocketLinkOptions = ({ host: string; port: number } | { path: string }) & {
  /** First reconnect delay after the connection drops; doubles up to maxReconnectDelayMs. */
  reconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
};

/**
 * A TCP or UNIX-socket byte stream: a serial-over-IP adapter (RFC 2217 servers in raw mode, ser2net), or an
 * emulator's UART chardev. Reconnects with bounded backoff when the connection drops, like SerialPortLink.
 */
export class SocketLink implements ByteLink {
  readonly #options: SocketLinkOptions;
  readonly #signals = new LinkSignals('down');
  #socket: net.Socket | undefined;
  #timer: NodeJS.Timeout | undefined;
  #delay: number;
  reconnectCount = 0;

  constructor(options: SocketLinkOptions) {
    this.#options = options;
    this.#delay = options.reconnectDelayMs ?? 50;
  }

  static async connect(options: SocketLinkOptions, timeoutMs = 5000): Promise<SocketLink> {
    const link = new SocketLink(options);
    link.#connect();
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

  #connect(): void {
    if (this.state === 'closed') return;
    const o = this.#options;
    const socket = 'path' in o ? net.connect({ path: o.path }) : net.connect({ host: o.host, port: o.port });
    socket.setNoDelay(true);
    socket.once('connect', () => {
      if (this.state === 'closed') {
        socket.destroy();
        return;
      }
      this.#socket = socket;
      this.#delay = this.#options.reconnectDelayMs ?? 50;
      this.#signals.setState('up');
    });
    socket.on('data', (chunk: Buffer) => this.#signals.emitData(new Uint8Array(chunk)));
    socket.on('error', () => undefined); // 'close' follows and does the work
    socket.once('close', () => {
      if (this.#socket === socket) this.#socket = undefined;
      this.#signals.setState('down');
      this.#scheduleReconnect();
    });
  }

  #scheduleReconnect(): void {
    if (this.state === 'closed' || this.#timer) return;
    const delay = this.#delay;
    this.#delay = Math.min(this.#delay * 2, this.#options.maxReconnectDelayMs ?? 1000);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.reconnectCount++;
      this.#connect();
    }, delay);
  }

  write(bytes: Uint8Array): Promise<void> {
    const socket = this.#socket;
    if (!socket || this.state !== 'up') return Promise.reject(new LinkDownError('socket is not connected'));
    return new Promise((resolve, reject) => {
      socket.write(bytes, (error) => (error ? reject(new LinkDownError(error.message)) : resolve()));
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
    clearTimeout(this.#timer);
    this.#signals.setState('closed');
    const socket = this.#socket;
    this.#socket = undefined;
    if (!socket) return Promise.resolve();
    return new Promise((resolve) => {
      socket.once('close', () => resolve());
      socket.destroy();
    });
  }
}
