// mcumgr image management group (1): slot state, test/confirm, and the chunked upload into the secondary slot.
import { createHash } from 'node:crypto';
import { SmpDeviceError, SmpTimeoutError } from './smpClient.ts';
import type { SmpClient } from './smpClient.ts';
import { cborHeadSize, encodeCbor } from './smpCbor.ts';
import type { CborMap, CborValue } from './smpCbor.ts';
import { SMP_HEADER_SIZE } from './smpHeader.ts';
import { LinkDownError } from './link.ts';

export const IMAGE_GROUP = 1;
export const IMAGE_STATE = 0;
export const IMAGE_UPLOAD = 1;

export interface ImageSlot {
  image: number;
  slot: number;
  version: string;
  hash: Uint8Array;
  bootable: boolean;
  pending: boolean;
  confirmed: boolean;
  active: boolean;
  permanent: boolean;
}

function parseSlot(value: CborValue): ImageSlot | undefined {
  if (!value || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array) return undefined;
  const v = value;
  if (typeof v.slot !== 'number' || typeof v.version !== 'string') return undefined;
  return {
    image: typeof v.image === 'number' ? v.image : 0,
    slot: v.slot,
    version: v.version,
    hash: v.hash instanceof Uint8Array ? v.hash : new Uint8Array(),
    bootable: v.bootable === true,
    pending: v.pending === true,
    confirmed: v.confirmed === true,
    active: v.active === true,
    permanent: v.permanent === true,
  };
}

function parseSlots(body: CborMap): ImageSlot[] {
  if (!Array.isArray(body.images)) throw new Error('image state reply has no images list');
  return body.images.map(parseSlot).filter((s): s is ImageSlot => s !== undefined);
}

export async function readImageState(client: SmpClient): Promise<ImageSlot[]> {
  const { body } = await client.request({ op: 'read', group: IMAGE_GROUP, command: IMAGE_STATE });
  return parseSlots(body);
}

/** Marks the image with `hash` to be swapped in for one trial boot (MCUboot "test"). */
export async function testImage(client: SmpClient, hash: Uint8Array): Promise<ImageSlot[]> {
  const { body } = await client.request({ op: 'write', group: IMAGE_GROUP, command: IMAGE_STATE, body: { hash, confirm: false } });
  return parseSlots(body);
}

/** Makes the running image permanent, so MCUboot stops reverting it. */
export async function confirmImage(client: SmpClient, hash?: Uint8Array): Promise<ImageSlot[]> {
  const { body } = await client.request({
    op: 'write',
    group: IMAGE_GROUP,
    command: IMAGE_STATE,
    body: { confirm: true, ...(hash ? { hash } : {}) },
  });
  return parseSlots(body);
}

export interface UploadProgress {
  bytesSent: number;
  totalBytes: number;
  chunkSize: number;
  retries: number;
}

export interface UploadOptions {
  /** The device's buf_size: the largest SMP packet (header + CBOR) it accepts. */
  bufSize: number;
  imageNumber?: number;
  /** The first chunk may wait for a whole-slot erase. */
  firstChunkTimeoutMs?: number;
  /** Data bytes in the first chunk (default 256). */
  firstChunkData?: number;
  /** Chunk size never shrinks below this while adapting to a noisy line. */
  minChunkData?: number;
  /**
   * Asked before starting over after a device error: true when the device already holds the whole image (the
   * reply to the last chunk was lost and the device then forgot the upload), so it is not erased again.
   */
  alreadyComplete?: () => Promise<boolean>;
  /** Chunks in flight at once; at most the device's buf_count. 1 waits for every reply. */
  window?: number;
  /** Consecutive unanswered chunks before the upload gives up. */
  maxConsecutiveFailures?: number;
  onProgress?: (progress: UploadProgress) => void;
}

export interface UploadResult {
  bytes: number;
  requests: number;
  retries: number;
  /** True when the device already held part of this image and the upload continued from there. */
  resumed: boolean;
}

export class UploadError extends Error {
  override name = 'UploadError';
}

/** Fields sent with a chunk, without `data`: the first chunk also carries image, len and sha. */
function chunkFields(off: number, image: Uint8Array, sha: Uint8Array, imageNumber: number): CborMap {
  return off === 0 ? { image: imageNumber, len: image.length, off, sha } : { off };
}

/**
 * The largest data size whose request still fits in `bufSize`. The CBOR head of `data` grows with its length,
 * so the size is computed exactly rather than estimated.
 */
export function maxChunkData(bufSize: number, fields: CborMap): number {
  const base = SMP_HEADER_SIZE + encodeCbor({ ...fields, data: new Uint8Array() }).length - 1;
  let n = bufSize - base - 1;
  while (n > 0 && base + cborHeadSize(n) + n > bufSize) n--;
  return Math.max(0, n);
}

type ChunkOutcome = { ok: true; off: number; match: boolean | undefined } | { ok: false; error: unknown };

interface InFlight {
  off: number;
  n: number;
  outcome: Promise<ChunkOutcome>;
}

/**
 * Uploads an image to the secondary slot. The device's `off` in each reply is authoritative: after a lost
 * reply, a duplicate or a reconnect, the upload continues from where the device says it is. A first request
 * for an image the device already holds in part (same sha and len) is answered with the offset reached, which
 * is how an interrupted upload resumes. The chunk shrinks when chunks go unanswered (a noisy line corrupts
 * long frames far more often than short ones) and grows back while they get through.
 *
 * With `window` > 1 (the device has several SMP buffers) the next chunks are sent before the previous reply
 * is in, hiding the device's flash write time and the reply's trip. Replies come back in order; when one
 * is missing or names another offset, the chunks behind it are let run out and the upload continues from the
 * offset the device reported last. After a failure the window closes to one chunk until the line is calm.
 */
export async function uploadImage(client: SmpClient, image: Uint8Array, options: UploadOptions): Promise<UploadResult> {
  const imageNumber = options.imageNumber ?? 0;
  const sha = new Uint8Array(createHash('sha256').update(image).digest());
  const minChunk = options.minChunkData ?? 64;
  const maxFailures = options.maxConsecutiveFailures ?? 12;
  const window = Math.max(1, Math.min(options.window ?? 1, 8));
  const steadyMax = maxChunkData(options.bufSize, chunkFields(1, image, sha, imageNumber));
  if (steadyMax < minChunk) throw new UploadError(`device buffer of ${options.bufSize} bytes leaves no room for data`);

  let deviceOff = 0;
  let nextOff = 0;
  let limit = steadyMax;
  let failures = 0;
  let streak = 0;
  let calm = 0;
  let retries = 0;
  let requests = 0;
  let resumed = false;
  let restarts = 0;
  const inFlight: InFlight[] = [];
  // A bound on the whole loop: every request either advances, shrinks the chunk, or counts towards a limit.
  const maxRequests = Math.ceil(image.length / minChunk) * 4 + 100;

  const send = (off: number): InFlight => {
    if (++requests > maxRequests) throw new UploadError(`upload made no progress within ${maxRequests} requests`);
    const fields = chunkFields(off, image, sha, imageNumber);
    // The first chunk waits for the erase and is retried only after the long timeout: keep it short so a
    // noisy line is unlikely to corrupt it. The following chunks then grow to the steady size.
    const firstLimit = off === 0 ? Math.min(limit, options.firstChunkData ?? 256) : limit;
    const n = Math.min(firstLimit, maxChunkData(options.bufSize, fields), image.length - off);
    const outcome = client
      .request({
        op: 'write',
        group: IMAGE_GROUP,
        command: IMAGE_UPLOAD,
        body: { ...fields, data: image.subarray(off, off + n) },
        retries: 0,
        ...(off === 0 ? { timeoutMs: options.firstChunkTimeoutMs ?? 15_000 } : {}),
      })
      .then(
        (reply): ChunkOutcome => {
          const next = reply.body.off;
          if (typeof next !== 'number' || next < 0 || next > image.length) {
            return { ok: false, error: new UploadError(`device replied with offset ${JSON.stringify(next ?? null) ?? typeof next}`) };
          }
          return { ok: true, off: next, match: typeof reply.body.match === 'boolean' ? reply.body.match : undefined };
        },
        (error: unknown): ChunkOutcome => ({ ok: false, error }),
      );
    return { off, n, outcome };
  };

  /** Lets the chunks behind a failed or out-of-step one run out; returns the last offset the device named. */
  const drain = async (): Promise<void> => {
    for (const chunk of inFlight.splice(0)) {
      const outcome = await chunk.outcome;
      if (outcome.ok) deviceOff = outcome.off;
    }
    nextOff = deviceOff;
  };

  try {
    while (deviceOff < image.length) {
      // The first chunk goes alone: it may wait for an erase, and its reply may say to resume elsewhere.
      const depth = calm >= 8 ? window : 1;
      const push = (): void => {
        const chunk = send(nextOff);
        inFlight.push(chunk);
        nextOff = chunk.off + chunk.n;
      };
      if (inFlight.length === 0) push();
      while (inFlight[0]!.off !== 0 && inFlight.length < depth && nextOff < image.length) push();

      const head = inFlight.shift()!;
      const outcome = await head.outcome;
      if (!outcome.ok) {
        const error = outcome.error;
        // A link that stays down past the client's wait counts like an unanswered chunk: bounded the same way.
        if (error instanceof SmpTimeoutError || error instanceof LinkDownError) {
          retries++;
          streak = 0;
          calm = 0;
          if (++failures > maxFailures) throw new UploadError(`${failures} chunks in a row went unanswered at offset ${head.off}`);
          limit = Math.max(minChunk, Math.floor(limit / 2));
          await drain();
          continue;
        }
        // A device that lost its upload state (it was reset, or the upload was taken over) refuses a chunk
        // in the middle; starting again from offset 0 with sha and len lets it resume or restart cleanly.
        if (error instanceof SmpDeviceError && head.off !== 0 && restarts < 2) {
          restarts++;
          await drain();
          if (options.alreadyComplete && (await options.alreadyComplete())) {
            deviceOff = image.length;
            options.onProgress?.({ bytesSent: deviceOff, totalBytes: image.length, chunkSize: 0, retries });
            break;
          }
          deviceOff = 0;
          nextOff = 0;
          continue;
        }
        throw error;
      }
      failures = 0;
      calm++;
      if (head.off === 0 && outcome.off > head.n) resumed = true;
      if (outcome.match === false) throw new UploadError('device reports the uploaded image does not match its sha');
      deviceOff = outcome.off;
      if (deviceOff !== head.off + head.n) await drain();
      if (++streak >= 4 && limit < steadyMax) {
        limit = Math.min(steadyMax, Math.ceil(limit * 1.5));
        streak = 0;
      }
      options.onProgress?.({ bytesSent: deviceOff, totalBytes: image.length, chunkSize: head.n, retries });
    }
  } finally {
    // Nothing is left pending behind a thrown error: later replies are simply ignored by the client.
    await Promise.all(inFlight.splice(0).map((chunk) => chunk.outcome));
  }
  return { bytes: image.length, requests, retries, resumed };
}
