// Decodes an HTTP/1.1 `Transfer-Encoding: chunked` body incrementally (RFC 9112 section 7.1): pieces of the
// wire go in as they arrive, split anywhere, and the payload comes out as views of them, never copied.

const maxLineBytes = 4096;

type State = 'size' | 'data' | 'dataEnd' | 'trailer' | 'done';

export class ChunkedBodyDecoder {
  #state: State = 'size';
  #line = '';
  #left = 0;

  get done(): boolean {
    return this.#state === 'done';
  }

  /**
   * Feeds wire bytes; payload goes to `payload` (a view of `wire`, valid only during the call). Returns how many
   * bytes of `wire` were used: fewer than its length only once the body has ended.
   */
  push(wire: Buffer, payload: (chunk: Buffer) => void): number {
    let at = 0;
    while (at < wire.length && this.#state !== 'done') {
      if (this.#state === 'data') {
        const take = Math.min(this.#left, wire.length - at);
        payload(wire.subarray(at, at + take));
        at += take;
        this.#left -= take;
        if (this.#left === 0) this.#state = 'dataEnd';
        continue;
      }
      const lf = wire.indexOf(0x0a, at);
      const end = lf === -1 ? wire.length : lf;
      this.#line += wire.toString('latin1', at, end);
      if (this.#line.length > maxLineBytes) throw new Error('chunked body: a line longer than 4096 bytes');
      at = end;
      if (lf === -1) break;
      at += 1;
      const line = this.#line.endsWith('\r') ? this.#line.slice(0, -1) : this.#line;
      this.#line = '';
      this.#onLine(line);
    }
    return at;
  }

  #onLine(line: string): void {
    switch (this.#state) {
      case 'size': {
        const size = /^([0-9a-fA-F]{1,13})[ \t]*(?:;.*)?$/.exec(line);
        if (!size?.[1]) throw new Error(`chunked body: bad chunk size line ${JSON.stringify(line.slice(0, 40))}`);
        this.#left = Number.parseInt(size[1], 16);
        this.#state = this.#left === 0 ? 'trailer' : 'data';
        return;
      }
      case 'dataEnd':
        if (line !== '') throw new Error('chunked body: chunk data longer than its size');
        this.#state = 'size';
        return;
      case 'trailer':
        // Trailer fields are ignored; an empty line ends the body.
        if (line === '') this.#state = 'done';
        return;
      default:
        return;
    }
  }
}
