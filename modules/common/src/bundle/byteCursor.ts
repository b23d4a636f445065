/** Pulls bytes from a stream in caller-sized pieces without copying chunks that are already big enough. */
export class ByteCursor {
  #iterator: AsyncIterator<Buffer>;
  #buffer: Buffer = Buffer.alloc(0);
  #ended = false;

  constructor(source: AsyncIterable<Buffer>) {
    this.#iterator = source[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    if (this.#ended) return false;
    const next = await this.#iterator.next();
    if (next.done === true) {
      this.#ended = true;
      return false;
    }
    this.#buffer = this.#buffer.length === 0 ? next.value : Buffer.concat([this.#buffer, next.value]);
    return true;
  }

  /** Up to `max` bytes; an empty buffer only at the end of the stream. */
  async some(max: number): Promise<Buffer> {
    if (this.#buffer.length === 0 && !(await this.#fill())) return this.#buffer;
    const piece = this.#buffer.subarray(0, max);
    this.#buffer = this.#buffer.subarray(piece.length);
    return piece;
  }

  /** Exactly `n` bytes, or undefined if the stream ends first. */
  async exact(n: number): Promise<Buffer | undefined> {
    while (this.#buffer.length < n) if (!(await this.#fill())) return undefined;
    const piece = this.#buffer.subarray(0, n);
    this.#buffer = this.#buffer.subarray(n);
    return piece;
  }

  /** Discards `n` bytes; false if the stream ends first. */
  async skip(n: number): Promise<boolean> {
    let remaining = n;
    while (remaining > 0) {
      const piece = await this.some(remaining);
      if (piece.length === 0) return false;
      remaining -= piece.length;
    }
    return true;
  }
}
