// SMP over the serial console transport: a packet travels as `len(2 BE) | body | crc16(2 BE)`, base64 encoded
// and cut into newline-terminated lines of at most 127 bytes, the first marked 06 09 and the rest 04 14.
// Anything else on the UART (the MCU's log output) is not SMP and is skipped line by line.

export const FRAME_START = [0x06, 0x09] as const;
export const FRAME_CONTINUATION = [0x04, 0x14] as const;
/** Zephyr's MCUMGR_SERIAL_MAX_FRAME: marker + base64 + newline. */
export const MAX_LINE_BYTES = 127;
/** Base64 characters per line, kept to a multiple of 4 so every line decodes on its own (as Zephyr decodes). */
export const BASE64_PER_LINE = Math.floor((MAX_LINE_BYTES - 3) / 4) * 4;
/** Raw (pre-base64) bytes carried per full line: 93. */
export const RAW_PER_LINE = (BASE64_PER_LINE / 4) * 3;

export function crc16Xmodem(bytes: Uint8Array, crc = 0): number {
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** Encodes one SMP packet (header + CBOR) into the console lines that carry it. */
export function encodeConsoleFrame(packet: Uint8Array): Uint8Array {
  if (packet.length + 2 > 0xffff) throw new RangeError(`SMP packet of ${packet.length} bytes exceeds the 16-bit frame length`);
  const raw = new Uint8Array(packet.length + 4);
  const view = new DataView(raw.buffer);
  view.setUint16(0, packet.length + 2);
  raw.set(packet, 2);
  view.setUint16(packet.length + 2, crc16Xmodem(packet));

  const lines: Buffer[] = [];
  for (let off = 0; off < raw.length; off += RAW_PER_LINE) {
    const marker = off === 0 ? FRAME_START : FRAME_CONTINUATION;
    const text = Buffer.from(raw.subarray(off, off + RAW_PER_LINE)).toString('base64');
    lines.push(Buffer.from(marker), Buffer.from(text, 'latin1'), Buffer.from([0x0a]));
  }
  return new Uint8Array(Buffer.concat(lines));
}

/** Bytes on the line for a packet of `packetLength` bytes: what the throughput ceiling is computed from. */
export function consoleFrameBytes(packetLength: number): number {
  const raw = packetLength + 4;
  const fullLines = Math.floor(raw / RAW_PER_LINE);
  const rest = raw % RAW_PER_LINE;
  return fullLines * MAX_LINE_BYTES + (rest ? 3 + Math.ceil(rest / 3) * 4 : 0);
}

export type FrameDecoderEvent =
  | { kind: 'packet'; packet: Uint8Array }
  | { kind: 'noise'; line: Uint8Array }
  | { kind: 'bad-frame'; reason: string };

const BASE64_LINE = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Reassembles SMP packets from an arbitrary byte stream. It never throws on input: a corrupted frame is
 * reported and dropped, and the decoder resynchronises on the next 06 09 line.
 */
export class ConsoleFrameDecoder {
  #line: number[] = [];
  #pending: Uint8Array[] | undefined;
  #expected = 0;
  #received = 0;
  readonly #maxLine: number;

  constructor(maxLineBytes = 4096) {
    this.#maxLine = maxLineBytes;
  }

  push(bytes: Uint8Array): FrameDecoderEvent[] {
    const events: FrameDecoderEvent[] = [];
    for (const byte of bytes) {
      if (byte === 0x0a) {
        const line = Uint8Array.from(this.#line);
        this.#line = [];
        const event = this.#onLine(line);
        if (event) events.push(event);
      } else if (this.#line.length < this.#maxLine) {
        this.#line.push(byte);
      }
      // An over-long line is truncated rather than buffered without bound; it will fail its base64 or CRC check.
    }
    return events;
  }

  reset(): void {
    this.#line = [];
    this.#pending = undefined;
  }

  #onLine(lineIn: Uint8Array): FrameDecoderEvent | undefined {
    // Tolerate CRLF line endings from consoles that add them.
    const line = lineIn.length && lineIn[lineIn.length - 1] === 0x0d ? lineIn.subarray(0, -1) : lineIn;
    const isStart = line[0] === FRAME_START[0] && line[1] === FRAME_START[1];
    const isCont = line[0] === FRAME_CONTINUATION[0] && line[1] === FRAME_CONTINUATION[1];
    if (!isStart && !isCont) return line.length ? { kind: 'noise', line } : undefined;
    if (isCont && !this.#pending) return { kind: 'bad-frame', reason: 'continuation without start' };

    const text = Buffer.from(line.subarray(2)).toString('latin1');
    if (text.length % 4 !== 0 || !BASE64_LINE.test(text)) {
      const wasPending = this.#pending !== undefined;
      this.#pending = undefined;
      return wasPending || isStart ? { kind: 'bad-frame', reason: 'invalid base64' } : undefined;
    }
    let chunk = new Uint8Array(Buffer.from(text, 'base64'));

    if (isStart) {
      if (this.#pending) {
        // A new start while a packet is incomplete: the previous one lost its tail.
        this.#pending = undefined;
      }
      if (chunk.length < 2) return { kind: 'bad-frame', reason: 'start frame too short' };
      this.#expected = (chunk[0]! << 8) | chunk[1]!;
      chunk = chunk.subarray(2);
      if (this.#expected < 2) return { kind: 'bad-frame', reason: 'length below crc size' };
      this.#pending = [];
      this.#received = 0;
    }
    this.#pending!.push(chunk);
    this.#received += chunk.length;
    if (this.#received < this.#expected) return undefined;

    const all = Buffer.concat(this.#pending!);
    this.#pending = undefined;
    if (all.length !== this.#expected) return { kind: 'bad-frame', reason: 'length mismatch' };
    const packet = new Uint8Array(all.subarray(0, all.length - 2));
    const crc = all.readUInt16BE(all.length - 2);
    if (crc16Xmodem(packet) !== crc) return { kind: 'bad-frame', reason: 'crc mismatch' };
    return { kind: 'packet', packet };
  }
}
