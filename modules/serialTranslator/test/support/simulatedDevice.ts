// An in-process SMP server with MCUboot's two-slot test/confirm/revert behaviour, for unit tests that need a
// device but not a firmware build. It mirrors firmware-samples/smp-server, which the integration tests use.
import { createHash } from 'node:crypto';
import { ConsoleFrameDecoder, encodeConsoleFrame } from '../../src/smpFraming.ts';
import { SMP_HEADER_SIZE, decodeSmpHeader, encodeSmpHeader } from '../../src/smpHeader.ts';
import { decodeCbor, encodeCbor } from '../../src/smpCbor.ts';
import type { CborMap } from '../../src/smpCbor.ts';
import { formatVersion, parseMcubootImage } from '../../src/mcubootImage.ts';
import type { ByteLink } from '../../src/link.ts';

export const HEALTH_FAIL_MARKER = 'SMP-SAMPLE:HEALTH=FAIL';

interface Slot {
  bytes: Uint8Array | undefined;
}

export interface SimulatedDeviceOptions {
  bufSize?: number;
  /** Log lines written between replies, as an MCU printing to the same UART would. */
  chatty?: boolean;
  /** Holds every reply this long, so a pipelining client has several requests in flight. */
  replyDelayMs?: number;
  /** Loses the reply that completes an upload, once: the client must not start over. */
  loseFinalUploadReply?: boolean;
  /** Drops the upload state once the upload completes, as some SMP servers do. */
  forgetsFinishedUpload?: boolean;
  /** Silently drops packets larger than this, whatever buf_size says: a misconfigured device. */
  realBufSize?: number;
}

export class SimulatedDevice {
  readonly #link: ByteLink;
  readonly #decoder = new ConsoleFrameDecoder();
  readonly #bufSize: number;
  readonly #chatty: boolean;
  readonly primary: Slot = { bytes: undefined };
  readonly secondary: Slot = { bytes: undefined };
  pendingTest = false;
  pendingPermanent = false;
  /** Swapped in on trial: MCUboot reverts at the next boot unless confirmed. */
  trial = false;
  upload: { len: number; sha: Uint8Array; off: number; data: Uint8Array } | undefined;
  resets = 0;
  requestsSeen = 0;
  repliesSent = 0;
  uploadsStarted = 0;
  #loseFinalUploadReply: boolean;
  readonly #forgetsFinishedUpload: boolean;
  readonly #realBufSize: number;
  /** The most requests received and not yet answered at any moment: the client's effective window. */
  maxOutstanding = 0;
  readonly #replyDelayMs: number;
  readonly #unsubscribe: () => void;

  constructor(link: ByteLink, initialImage: Uint8Array, options: SimulatedDeviceOptions = {}) {
    this.#link = link;
    this.#bufSize = options.bufSize ?? 1024;
    this.#chatty = options.chatty ?? false;
    this.#replyDelayMs = options.replyDelayMs ?? 0;
    this.#loseFinalUploadReply = options.loseFinalUploadReply ?? false;
    this.#forgetsFinishedUpload = options.forgetsFinishedUpload ?? false;
    this.#realBufSize = options.realBufSize ?? Infinity;
    this.primary.bytes = initialImage;
    this.#unsubscribe = link.onData((bytes) => {
      for (const event of this.#decoder.push(bytes)) if (event.kind === 'packet') this.#onPacket(event.packet);
    });
  }

  stop(): void {
    this.#unsubscribe();
  }

  #reply(reqHeader: ReturnType<typeof decodeSmpHeader>, body: CborMap): void {
    const cbor = encodeCbor(body);
    const header = encodeSmpHeader({ ...reqHeader, op: reqHeader.op + 1, length: cbor.length });
    const packet = new Uint8Array(SMP_HEADER_SIZE + cbor.length);
    packet.set(header);
    packet.set(cbor, SMP_HEADER_SIZE);
    const log = this.#chatty ? Buffer.from(`[00:00:0${this.requestsSeen % 10}] <inf> app: handled request\r\n`) : Buffer.alloc(0);
    const send = () => {
      this.repliesSent++;
      void this.#link.write(new Uint8Array(Buffer.concat([log, encodeConsoleFrame(packet), log]))).catch(() => undefined);
    };
    if (this.#replyDelayMs) setTimeout(send, this.#replyDelayMs);
    else send();
  }

  #error(h: ReturnType<typeof decodeSmpHeader>, rc: number): void {
    this.#reply(h, h.version === 1 ? { err: { group: h.group, rc } } : { rc });
  }

  #onPacket(packet: Uint8Array): void {
    if (packet.length < SMP_HEADER_SIZE || packet.length > this.#realBufSize) return;
    const h = decodeSmpHeader(packet);
    let body: CborMap;
    try {
      body = decodeCbor(packet.subarray(SMP_HEADER_SIZE)) as CborMap;
    } catch {
      return;
    }
    this.requestsSeen++;
    this.maxOutstanding = Math.max(this.maxOutstanding, this.requestsSeen - this.repliesSent);
    if (h.group === 0 && h.command === 0) {
      const healthy = !Buffer.from(this.primary.bytes ?? []).includes(HEALTH_FAIL_MARKER);
      this.#reply(h, { r: healthy && typeof body.d === 'string' ? body.d : 'unhealthy' });
    } else if (h.group === 0 && h.command === 6) {
      this.#reply(h, { buf_size: this.#bufSize, buf_count: 4 });
    } else if (h.group === 0 && h.command === 5) {
      this.#reply(h, {});
      setImmediate(() => this.boot());
    } else if (h.group === 1 && h.command === 0 && h.op === 0) {
      this.#reply(h, { images: this.slots() });
    } else if (h.group === 1 && h.command === 0 && h.op === 2) {
      this.#stateWrite(h, body);
    } else if (h.group === 1 && h.command === 1) {
      this.#upload(h, body);
    } else {
      this.#error(h, 8);
    }
  }

  #stateWrite(h: ReturnType<typeof decodeSmpHeader>, body: CborMap): void {
    const hash = body.hash instanceof Uint8Array ? body.hash : undefined;
    const confirm = body.confirm === true;
    const primaryHash = this.#hashOf(this.primary.bytes);
    if (confirm && (!hash || (primaryHash && Buffer.from(hash).equals(primaryHash)))) {
      this.trial = false;
    } else if (hash && this.secondary.bytes && Buffer.from(hash).equals(this.#hashOf(this.secondary.bytes)!)) {
      this.pendingTest = true;
      this.pendingPermanent = confirm;
    } else {
      this.#error(h, 5);
      return;
    }
    this.#reply(h, { images: this.slots() });
  }

  #upload(h: ReturnType<typeof decodeSmpHeader>, body: CborMap): void {
    const off = body.off;
    const data = body.data;
    if (typeof off !== 'number' || !(data instanceof Uint8Array)) return this.#error(h, 3);
    if (off === 0) {
      const len = body.len;
      const sha = body.sha;
      if (typeof len !== 'number' || !(sha instanceof Uint8Array)) return this.#error(h, 3);
      if (this.upload && this.upload.len === len && Buffer.from(this.upload.sha).equals(sha) && this.upload.off > 0) {
        return this.#reply(h, { off: this.upload.off });
      }
      this.upload = { len, sha, off: 0, data: new Uint8Array(len) };
      this.uploadsStarted++;
      this.secondary.bytes = undefined;
      this.pendingTest = false;
    }
    const up = this.upload;
    if (!up) return this.#error(h, 3);
    if (off !== up.off) return this.#reply(h, { off: up.off });
    if (off + data.length > up.len) return this.#error(h, 3);
    up.data.set(data, off);
    up.off += data.length;
    if (up.off === up.len) {
      const match = createHash('sha256').update(up.data).digest().equals(up.sha);
      // The upload state is kept (as Zephyr keeps it), so a retried last chunk is answered with off = len.
      if (match) this.secondary.bytes = up.data;
      if (!match || this.#forgetsFinishedUpload) this.upload = undefined;
      if (this.#loseFinalUploadReply) {
        this.#loseFinalUploadReply = false;
        this.repliesSent++;
        return;
      }
      return this.#reply(h, { off: up.off, match });
    }
    this.#reply(h, { off: up.off });
  }

  #hashOf(image: Uint8Array | undefined): Buffer | undefined {
    if (!image) return undefined;
    try {
      const parsed = parseMcubootImage(image);
      return createHash('sha256').update(image.subarray(0, parsed.hashedLength)).digest();
    } catch {
      return undefined;
    }
  }

  slots(): CborMap[] {
    const describe = (bytes: Uint8Array | undefined, slot: number): CborMap | undefined => {
      if (!bytes) return undefined;
      let version = '0.0.0';
      try {
        version = formatVersion(parseMcubootImage(bytes).version);
      } catch {
        return undefined;
      }
      return {
        slot,
        version,
        hash: this.#hashOf(bytes)!,
        bootable: true,
        pending: slot === 1 && this.pendingTest,
        confirmed: slot === 0 && !this.trial,
        active: slot === 0,
        permanent: slot === 1 && this.pendingPermanent,
      };
    };
    return [describe(this.primary.bytes, 0), describe(this.secondary.bytes, 1)].filter((s): s is CborMap => s !== undefined);
  }

  /** What MCUboot's swap does at boot: revert an unconfirmed trial, or swap in a pending image. */
  boot(): void {
    this.resets++;
    this.upload = undefined;
    if (this.trial) {
      [this.primary.bytes, this.secondary.bytes] = [this.secondary.bytes, this.primary.bytes];
      this.trial = false;
    } else if (this.pendingTest && this.secondary.bytes) {
      [this.primary.bytes, this.secondary.bytes] = [this.secondary.bytes, this.primary.bytes];
      this.trial = !this.pendingPermanent;
    }
    this.pendingTest = false;
    this.pendingPermanent = false;
  }
}
