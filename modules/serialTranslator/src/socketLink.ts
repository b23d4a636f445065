import net from 'node:net';
import { LinkDownError } from './link.ts';
import { ReconnectingLink } from './reconnectingLink.ts';

export type SocketLinkOptions = ({ host: string; port: number } | { path: string }) & {
  /** First reconnect delay after the connection drops; doubles up to maxReconnectDelayMs. */
  reconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
};

/**
 * A TCP or UNIX-socket byte stream: a serial-over-IP adapter (RFC 2217 servers in raw mode, ser2net), or an
 * emulator's UART chardev. Reconnects with bounded backoff when the connection drops, like SerialPortLink.
 */
export class SocketLink extends ReconnectingLink {
  readonly #options: SocketLinkOptions;
  #socket: net.Socket | undefined;

  constructor(options: SocketLinkOptions) {
    super({ initialMs: options.reconnectDelayMs ?? 50, maxMs: options.maxReconnectDelayMs ?? 1000 });
    this.#options = options;
  }

  static async connect(options: SocketLinkOptions, timeoutMs = 5000): Promise<SocketLink> {
    const link = new SocketLink(options);
    await link.start(timeoutMs);
    return link;
  }

  get reconnectCount(): number {
    return this.retries;
  }

  protected attempt(): void {
    const o = this.#options;
    const socket = 'path' in o ? net.connect({ path: o.path }) : net.connect({ host: o.host, port: o.port });
    socket.setNoDelay(true);
    socket.once('connect', () => {
      if (this.state === 'closed') {
        socket.destroy();
        return;
      }
      this.#socket = socket;
      this.connected();
    });
    socket.on('data', (chunk: Buffer) => this.signals.emitData(new Uint8Array(chunk)));
    socket.on('error', () => undefined); // 'close' follows and does the work
    socket.once('close', () => {
      if (this.#socket === socket) this.#socket = undefined;
      this.retry();
    });
  }

  write(bytes: Uint8Array): Promise<void> {
    const socket = this.#socket;
    if (!socket || this.state !== 'up') return Promise.reject(new LinkDownError('socket is not connected'));
    return new Promise((resolve, reject) => {
      socket.write(bytes, (error) => (error ? reject(new LinkDownError(error.message)) : resolve()));
    });
  }

  protected release(): Promise<void> {
    const socket = this.#socket;
    this.#socket = undefined;
    if (!socket) return Promise.resolve();
    return new Promise((resolve) => {
      socket.once('close', () => resolve());
      socket.destroy();
    });
  }
}
