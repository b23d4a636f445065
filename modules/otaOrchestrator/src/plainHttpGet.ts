import { OtaError } from '@edge-ota/common';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { ChunkedBodyDecoder } from './chunkedBody.ts';

// A minimal HTTP/1.1 GET client for plain-http downloads (the gateway's content cache): one request per
// connection (`Connection: close`), the body read straight into one reused buffer (`onread`) and handed to the
// caller synchronously, so a large download allocates nothing per chunk. Node's http client reads 64 KiB at a time
// into new buffers, and that alone ran at about half of curl's rate. The caller can pause reading (backpressure).
// Redirects are not followed (like `http.request`). Bodies are framed by Content-Length, chunked
// transfer-encoding, or the end of the connection; any other transfer-coding is refused.

/** A response whose body has not been read yet. Used for the fast plain-http path and Node's https client alike. */
export interface DownloadResponse {
  readonly statusCode: number;
  /** A header's value (name in lower case); repeated headers are joined with ", ". */
  header(name: string): string | undefined;
  /**
   * Hands every body byte to `sink`, in order. The buffer is only valid during the call (it is reused), so the
   * sink must consume it synchronously. A sink that returns a promise is asking for a pause: nothing more is read
   * from the connection until the promise settles (the rest of the current read may still be delivered, at most
   * one receive buffer's worth); if it rejects, the body fails with its error. Resolves at the end of the body;
   * rejects if the connection breaks, the framing is broken, or `sink` throws (with that error). May be called once.
   */
  readBody(sink: BodySink): Promise<void>;
  /** Drops the connection; safe to call at any time, more than once. */
  close(): void;
}

/** Receives body bytes; a returned promise pauses the download until it settles (backpressure). */
export type BodySink = (chunk: Buffer) => void | Promise<void>;

export interface PlainGetOptions {
  headers: Readonly<Record<string, string>>;
  /** No byte for this long: the connection is dropped with an error. */
  idleTimeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Receive buffer; 128 KiB by default (see defaultReadBufferBytes). */
  readBufferBytes?: number;
}

/**
 * Small enough that a read is still in the CPU cache when the caller hashes and copies it (measured: 64-256 KiB
 * reads cost about a third less kernel time per GiB than 1 MiB reads on the bench machine), large enough that a
 * GiB is only some 8,000 callbacks.
 */
export const defaultReadBufferBytes = 128 * 1024;

const maxHeadBytes = 64 * 1024;
const tokenPattern = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Sends `GET <url>` over plain TCP; resolves once the final response head has arrived. */
export function plainHttpGet(url: URL, options: PlainGetOptions): Promise<DownloadResponse> {
  if (url.protocol !== 'http:') return Promise.reject(new Error(`plainHttpGet: ${url.protocol} is not plain http`));
  const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`];
  for (const [name, value] of Object.entries(options.headers)) {
    const lower = name.toLowerCase();
    if (lower === 'host' || lower === 'connection') continue;
    if (!tokenPattern.test(name) || /[\r\n\0]/.test(value)) return Promise.reject(new Error(`invalid request header ${JSON.stringify(name)}`));
    lines.push(`${name}: ${value}`);
  }
  lines.push('Connection: close', '', '');
  const head = Buffer.from(lines.join('\r\n'), 'latin1');
  return new PlainResponse(url, head, options).started;
}

type Framing = { kind: 'length'; left: number } | { kind: 'chunked'; decoder: ChunkedBodyDecoder } | { kind: 'untilClose' };

class PlainResponse implements DownloadResponse {
  statusCode = 0;
  readonly started: Promise<DownloadResponse>;
  readonly #url: URL;
  readonly #socket: Socket;
  readonly #signal: AbortSignal | undefined;
  readonly #headers = new Map<string, string>();
  #phase: 'head' | 'waiting' | 'body' | 'ended' | 'failed' = 'head';
  #headBytes: Buffer = Buffer.alloc(0);
  /** Body bytes that came with the head, or while no sink was set. */
  #pending: Buffer | undefined;
  #eof = false;
  #failure: unknown;
  #framing: Framing | undefined;
  #sink: BodySink | undefined;
  /** Pauses the sink asked for during the current read. */
  #pauses: Array<Promise<void>> = [];
  #settleHead: { resolve: (r: DownloadResponse) => void; reject: (e: unknown) => void } | undefined;
  #settleBody: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  readonly #onAbort = (): void => this.#fail(this.#signal?.reason ?? new Error('aborted'));

  constructor(url: URL, request: Buffer, options: PlainGetOptions) {
    this.#url = url;
    this.#signal = options.signal;
    this.started = new Promise((resolve, reject) => (this.#settleHead = { resolve, reject }));
    const readBuffer = Buffer.allocUnsafe(options.readBufferBytes ?? defaultReadBufferBytes);
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    this.#socket = connect({
      host,
      port: Number(url.port || 80),
      onread: { buffer: readBuffer, callback: (length) => this.#onRead(readBuffer.subarray(0, length)) },
    });
    this.#socket.setNoDelay(true);
    this.#socket.setTimeout(options.idleTimeoutMs, () => this.#fail(new Error(`no data for ${options.idleTimeoutMs} ms`)));
    this.#socket.on('connect', () => this.#socket.write(request));
    this.#socket.on('end', () => this.#onEnd());
    this.#socket.on('error', (error) => this.#fail(error));
    this.#socket.on('close', () => {
      // A body that ends with the connection may still be waiting for its reader.
      if (!(this.#phase === 'waiting' && this.#eof)) this.#fail(new Error('connection closed'));
    });
    if (this.#signal?.aborted) this.#onAbort();
    else this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  header(name: string): string | undefined {
    return this.#headers.get(name.toLowerCase());
  }

  readBody(sink: BodySink): Promise<void> {
    if (this.#sink || this.#phase === 'head') return Promise.reject(new Error('readBody: called twice or before the head'));
    this.#sink = sink;
    const body = new Promise<void>((resolve, reject) => (this.#settleBody = { resolve, reject }));
    if (this.#phase === 'failed') {
      this.#settleBody?.reject(this.#failure);
      return body;
    }
    this.#phase = 'body';
    try {
      if (this.#framing === undefined) this.#framing = this.#frame();
      const pending = this.#pending;
      this.#pending = undefined;
      if (pending && pending.length > 0) this.#onBody(pending);
      if (this.#phase === 'body' && this.#eof) this.#onEnd();
      if (!this.#pauseIfAsked()) this.#resume();
    } catch (error) {
      this.#fail(error);
    }
    return body;
  }

  close(): void {
    this.#fail(new Error('closed by the client'));
  }

  /** Returns false to pause the socket (no sink yet, or done). */
  #onRead(data: Buffer): boolean {
    try {
      if (this.#phase === 'head') return this.#onHead(data);
      if (this.#phase === 'body') {
        this.#onBody(data);
        // Pauses are taken even when the body just ended, so a pause that fails later still has its handler.
        const paused = this.#pauseIfAsked();
        return this.#phase === 'body' && !paused;
      }
      if (this.#phase === 'waiting') {
        // Should not happen (the socket is paused), but never lose bytes.
        this.#pending = Buffer.concat([this.#pending ?? Buffer.alloc(0), data]);
        return false;
      }
    } catch (error) {
      this.#fail(error);
    }
    return false;
  }

  #onHead(data: Buffer): boolean {
    // The receive buffer is reused, so bytes kept across reads are copied (only the head and what follows it).
    let bytes = Buffer.concat([this.#headBytes, data]);
    for (;;) {
      const end = bytes.indexOf('\r\n\r\n', 0, 'latin1');
      if (end === -1) {
        if (bytes.length > maxHeadBytes) throw new Error(`response head larger than ${maxHeadBytes} bytes`);
        this.#headBytes = bytes;
        return true;
      }
      this.#parseHead(bytes.toString('latin1', 0, end));
      bytes = bytes.subarray(end + 4);
      // 1xx (e.g. 103 Early Hints) precede the real response.
      if (this.statusCode >= 200 || this.statusCode === 101) break;
      this.#headers.clear();
    }
    this.#headBytes = Buffer.alloc(0);
    this.#pending = bytes;
    this.#phase = 'waiting';
    this.#settleHead?.resolve(this);
    return false;
  }

  #parseHead(text: string): void {
    const [statusLine = '', ...fields] = text.split('\r\n');
    const status = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine);
    if (!status) throw new Error(`not an HTTP/1.x response: ${JSON.stringify(statusLine.slice(0, 60))}`);
    this.statusCode = Number(status[1]);
    for (const field of fields) {
      const colon = field.indexOf(':');
      const name = field.slice(0, colon);
      if (colon <= 0 || !tokenPattern.test(name)) throw new Error(`malformed response header ${JSON.stringify(field.slice(0, 60))}`);
      const key = name.toLowerCase();
      const value = field.slice(colon + 1).trim();
      const seen = this.#headers.get(key);
      this.#headers.set(key, seen === undefined ? value : `${seen}, ${value}`);
    }
  }

  /** How the body ends; throws for a transfer-coding this client cannot decode. */
  #frame(): Framing {
    const transferEncoding = this.header('transfer-encoding');
    if (transferEncoding !== undefined) {
      const codings = transferEncoding.split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '');
      if (codings.length === 1 && codings[0] === 'chunked') return { kind: 'chunked', decoder: new ChunkedBodyDecoder() };
      throw new OtaError('DOWNLOAD_HTTP_ERROR', `${this.#url.host} sent Transfer-Encoding: ${transferEncoding}; only chunked is supported`);
    }
    const contentLength = this.header('content-length');
    if (contentLength !== undefined) {
      const values = new Set(contentLength.split(',').map((v) => v.trim()));
      const [only] = values;
      if (values.size !== 1 || only === undefined || !/^\d{1,15}$/.test(only)) throw new Error(`invalid Content-Length ${JSON.stringify(contentLength)}`);
      return { kind: 'length', left: Number(only) };
    }
    return { kind: 'untilClose' };
  }

  /** After a read: if the sink asked for a pause, reading stays stopped until every pause it asked for settles. */
  #pauseIfAsked(): boolean {
    if (this.#pauses.length === 0) return false;
    const pauses = this.#pauses;
    this.#pauses = [];
    Promise.all(pauses).then(
      () => this.#resume(),
      (error: unknown) => this.#fail(error),
    );
    return true;
  }

  #resume(): void {
    if (this.#phase === 'body') this.#socket.resume();
  }

  #onBody(data: Buffer): void {
    const framing = this.#framing;
    const consumer = this.#sink;
    if (!framing || !consumer) return;
    const sink = (chunk: Buffer): void => {
      const pause = consumer(chunk);
      if (pause) this.#pauses.push(pause);
    };
    switch (framing.kind) {
      case 'length': {
        // Anything after the declared length is not this body (the connection is closed right after it).
        const take = Math.min(framing.left, data.length);
        framing.left -= take;
        if (take > 0) sink(data.subarray(0, take));
        if (framing.left === 0) this.#finish();
        return;
      }
      case 'chunked':
        framing.decoder.push(data, sink);
        if (framing.decoder.done) this.#finish();
        return;
      case 'untilClose':
        sink(data);
        return;
    }
  }

  #onEnd(): void {
    this.#eof = true;
    if (this.#phase === 'head') this.#fail(new Error('the connection closed before a complete response head'));
    if (this.#phase !== 'body') return;
    const framing = this.#framing;
    if (framing?.kind === 'untilClose') this.#finish();
    else if (framing?.kind === 'length') this.#fail(new Error(`the connection closed ${framing.left} bytes before the end of the body`));
    else this.#fail(new Error('the connection closed before the end of the chunked body'));
  }

  #finish(): void {
    if (this.#phase !== 'body') return;
    this.#phase = 'ended';
    this.#release();
    this.#settleBody?.resolve();
  }

  #fail(error: unknown): void {
    if (this.#phase === 'ended' || this.#phase === 'failed') return;
    const phase = this.#phase;
    this.#phase = 'failed';
    this.#failure = error;
    this.#release();
    if (phase === 'head') this.#settleHead?.reject(error);
    else if (phase === 'body') this.#settleBody?.reject(error);
  }

  #release(): void {
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#pending = undefined;
    this.#socket.destroy();
  }
}
