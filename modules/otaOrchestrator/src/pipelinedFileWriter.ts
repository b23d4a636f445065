import { write } from 'node:fs';

// Writes a stream of chunks into a file, from a given position on, while the caller goes on receiving and hashing:
// chunks are copied into a few fixed buffers, and full buffers are written by libuv's thread pool, one write at a
// time and in order, so the file always holds a prefix of the stream (a restart continues right after its last
// byte). Writing in line made a download take the sum of receiving, hashing and writing; this overlaps them.
//
// With a direct target (a descriptor opened with O_DIRECT) the data goes from these buffers to the disk without a
// page-cache copy: far less CPU, and a 1 GiB image does not push the gateway's working set out of memory. O_DIRECT
// needs memory, file offset and length aligned, so every buffer starts on an aligned address (WebAssembly memory
// is page-aligned; Node's Buffers are not), the first buffer ends on the first aligned file offset, and the bytes
// that do not fill a whole block (a start or an end off the boundary) go through the ordinary descriptor.
//
// Memory is fixed: `buffers` x `bufferBytes`. When too little room is left for the next read, `push` returns a
// promise that resolves once a write has freed a buffer: the caller stops reading until then (backpressure).

export interface WriteTarget {
  /** Ordinary (page-cache) descriptor of the file. */
  fd: number;
  /** Where the first pushed byte goes. */
  position: number;
  /** The same file opened with O_DIRECT, when the filesystem allows it. */
  direct?: { fd: number; alignment: number };
}

export interface PipelinedFileWriterOptions {
  /** Size of each write (and of each buffer); a multiple of 64 KiB. */
  bufferBytes: number;
  buffers: number;
  /**
   * Room the caller needs for what it may still push before it can pause (one receive buffer): below this much
   * free space, `push` asks for a pause.
   */
  headroomBytes: number;
}

export const defaultPipelinedFileWriterOptions: PipelinedFileWriterOptions = {
  bufferBytes: 1024 * 1024,
  buffers: 4,
  headroomBytes: 128 * 1024,
};

const wasmPageBytes = 64 * 1024;

/** The one WebAssembly API used here (the project's TypeScript libs do not declare WebAssembly). */
declare const WebAssembly: { Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer } };

interface Block {
  buffer: Buffer;
  /** File offset of the buffer's first byte. */
  position: number;
  length: number;
}

export class PipelinedFileWriter {
  readonly #target: WriteTarget;
  readonly #options: PipelinedFileWriterOptions;
  readonly #free: Buffer[];
  /** Full blocks waiting for the writer thread, oldest first. */
  readonly #queue: Block[] = [];
  #filling: Block | undefined;
  /** Views handed out for a short first block, mapped to the whole buffer they came from. */
  readonly #shortBuffers = new Map<Buffer, Buffer>();
  /** File offset of the next byte pushed. */
  #nextPosition: number;
  #writing = false;
  #written = 0;
  #failure: Error | undefined;
  #closed = false;
  /** Who waits for room (a paused caller) or for the writes to finish. */
  #waiters: Array<{ resolve: () => void; reject: (error: Error) => void; until: () => boolean }> = [];

  constructor(target: WriteTarget, options: Partial<PipelinedFileWriterOptions> = {}) {
    this.#target = target;
    this.#options = { ...defaultPipelinedFileWriterOptions, ...options };
    const { bufferBytes, buffers, headroomBytes } = this.#options;
    if (buffers < 2 || bufferBytes % wasmPageBytes !== 0 || headroomBytes > bufferBytes * (buffers - 1)) {
      throw new RangeError('PipelinedFileWriter: needs 2 or more buffers of a multiple of 64 KiB, and headroom below the room of all but one');
    }
    if (target.direct && (bufferBytes % target.direct.alignment !== 0 || wasmPageBytes % target.direct.alignment !== 0)) {
      throw new RangeError(`PipelinedFileWriter: buffers cannot be aligned to ${target.direct.alignment} bytes`);
    }
    this.#nextPosition = target.position;
    const memory = new WebAssembly.Memory({ initial: (bufferBytes * buffers) / wasmPageBytes });
    this.#free = Array.from({ length: buffers }, (_, i) => Buffer.from(memory.buffer, i * bufferBytes, bufferBytes));
  }

  /** Bytes that have reached the file: the file holds the stream's first `writtenBytes` bytes from `position`. */
  get writtenBytes(): number {
    return this.#written;
  }

  /**
   * Copies `chunk` for writing. Returns a promise when the caller should stop reading until it resolves (it
   * rejects if a write fails). Throws the write error if one has happened already. A caller that honours the
   * pauses never pushes more than the headroom while paused.
   */
  push(chunk: Buffer): Promise<void> | undefined {
    if (this.#failure) throw this.#failure;
    if (this.#closed) throw new Error('PipelinedFileWriter: push after close');
    let at = 0;
    while (at < chunk.length) {
      const block = this.#filling ?? this.#startBlock();
      const copied = chunk.copy(block.buffer, block.length, at, at + Math.min(chunk.length - at, block.buffer.length - block.length));
      block.length += copied;
      at += copied;
      this.#nextPosition += copied;
      if (block.length === block.buffer.length) this.#enqueueFilling();
    }
    if (this.#room() >= this.#options.headroomBytes) return undefined;
    return this.#wait(() => this.#room() >= this.#options.headroomBytes);
  }

  /**
   * Writes everything pushed and resolves once it is all in the file; no push after this. Rejects with the
   * first write error (then the file holds what was written before it).
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#failure) throw this.#failure;
    this.#enqueueFilling();
    await this.#wait(() => !this.#writing && this.#queue.length === 0);
  }

  /** A block whose buffer ends at the next aligned file offset when the stream starts off the boundary. */
  #startBlock(): Block {
    const buffer = this.#free.pop();
    if (!buffer) throw new Error('PipelinedFileWriter: pushed past the headroom without waiting for the pause');
    const alignment = this.#target.direct?.alignment;
    const offBoundary = alignment === undefined ? 0 : this.#nextPosition % alignment;
    const block = { buffer: offBoundary === 0 ? buffer : buffer.subarray(0, alignment! - offBoundary), position: this.#nextPosition, length: 0 };
    if (offBoundary !== 0) this.#shortBuffers.set(block.buffer, buffer);
    this.#filling = block;
    return block;
  }

  #room(): number {
    const inFilling = this.#filling ? this.#filling.buffer.length - this.#filling.length : 0;
    return this.#free.length * this.#options.bufferBytes + inFilling;
  }

  #enqueueFilling(): void {
    const block = this.#filling;
    this.#filling = undefined;
    if (block && block.length > 0) this.#queue.push(block);
    else if (block) this.#release(block.buffer);
    this.#writeNext();
  }

  #release(buffer: Buffer): void {
    const whole = this.#shortBuffers.get(buffer);
    this.#shortBuffers.delete(buffer);
    this.#free.push(whole ?? buffer);
  }

  #writeNext(): void {
    if (this.#writing || this.#failure) return;
    const block = this.#queue.shift();
    if (!block) return;
    this.#writing = true;
    const { direct } = this.#target;
    // Whole aligned blocks go to the direct descriptor; an unaligned start or end to the ordinary one.
    const alignedLength = direct && block.position % direct.alignment === 0 ? block.length - (block.length % direct.alignment) : 0;
    const writeFrom = (offset: number): void => {
      const fd = offset < alignedLength ? direct!.fd : this.#target.fd;
      const end = offset < alignedLength ? alignedLength : block.length;
      write(fd, block.buffer, offset, end - offset, block.position + offset, (error, bytes) => {
        if (error) {
          this.#failure = error;
          this.#writing = false;
          this.#settle();
          return;
        }
        if (offset + bytes < block.length) {
          writeFrom(offset + bytes);
          return;
        }
        this.#written += block.length;
        this.#release(block.buffer);
        this.#writing = false;
        this.#writeNext();
        this.#settle();
      });
    };
    writeFrom(0);
  }

  #wait(until: () => boolean): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (until()) return Promise.resolve();
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject, until }));
  }

  #settle(): void {
    const waiting = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiting) {
      if (this.#failure) waiter.reject(this.#failure);
      else if (waiter.until()) waiter.resolve();
      else this.#waiters.push(waiter);
    }
  }
}
