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

/**
 * Uploads an image to the secondary slot. The device's `off` in each reply is authoritative: after a lost
 * reply, a duplicate or a reconnect, the upload continues from where the device says it is. A first request
 * for an image the device already holds in part (same sha and len) is answered with the offset reached, which
 * is how an interrupted upload resumes. The chunk shrinks when chunks go unanswered (a noisy line corrupts
 * long frames far more often than short ones) and grows back while they get through.
 */
export async function uploadImage(client: SmpClient, image: Uint8Array, options: UploadOptions): Promise<UploadResult> {
  const imageNumber = options.imageNumber ?? 0;
  const sha = new Uint8Array(createHash('sha256').update(image).digest());
  const minChunk = options.minChunkData ?? 64;
  const maxFailures = options.maxConsecutiveFailures ?? 12;
  const steadyMax = maxChunkData(options.bufSize, chunkFields(1, image, sha, imageNumber));
  if (steadyMax < minChunk) throw new UploadError(`device buffer of ${options.bufSize} bytes leaves no room for data`);

  let off = 0;
  let limit = steadyMax;
  let failures = 0;
  let streak = 0;
  let retries = 0;
  let requests = 0;
  let resumed = false;
  let restarts = 0;
  // A bound on the whole loop: every request either advances, shrinks the chunk, or counts towards a limit.
  const maxRequests = Math.ceil(image.length / minChunk) * 4 + 100;

  while (off < image.length) {
    if (++requests > maxRequests) throw new UploadError(`upload made no progress within ${maxRequests} requests`);
    const fields = chunkFields(off, image, sha, imageNumber);
    // The first chunk waits for the erase and is retried only after the long timeout: keep it short so a
    // noisy line is unlikely to corrupt it. The following chunks then grow to the steady size.
    const firstLimit = off === 0 ? Math.min(limit, options.firstChunkData ?? 256) : limit;
    const n = Math.min(firstLimit, maxChunkData(options.bufSize, fields), image.length - off);
    const body = { ...fields, data: image.subarray(off, off + n) };
    let reply;
    try {
      reply = await client.request({
        op: 'write',
        group: IMAGE_GROUP,
        command: IMAGE_UPLOAD,
        body,
        retries: 0,
        ...(off === 0 ? { timeoutMs: options.firstChunkTimeoutMs ?? 15_000 } : {}),
      });
    } catch (error) {
      // A link that stays down past the client's wait counts like an unanswered chunk: bounded the same way.
      if (error instanceof SmpTimeoutError || error instanceof LinkDownError) {
        retries++;
        streak = 0;
        if (++failures > maxFailures) throw new UploadError(`${failures} chunks in a row went unanswered at offset ${off}`);
        limit = Math.max(minChunk, Math.floor(limit / 2));
        continue;
      }
      // A device that lost its upload state (it was reset, or the upload was taken over) refuses a chunk in
      // the middle; starting again from offset 0 with sha and len lets it resume or restart cleanly.
      if (error instanceof SmpDeviceError && off !== 0 && restarts < 2) {
        restarts++;
        off = 0;
        continue;
      }
      throw error;
    }
    failures = 0;
    const next = reply.body.off;
    if (typeof next !== 'number' || next < 0 || next > image.length) throw new UploadError(`device replied with offset ${JSON.stringify(next ?? null) ?? typeof next}`);
    if (off === 0 && next > n) resumed = true;
    if (reply.body.match === false) throw new UploadError('device reports the uploaded image does not match its sha');
    off = next;
    if (++streak >= 4 && limit < steadyMax) {
      limit = Math.min(steadyMax, Math.ceil(limit * 1.5));
      streak = 0;
    }
    options.onProgress?.({ bytesSent: off, totalBytes: image.length, chunkSize: n, retries });
  }
  return { bytes: image.length, requests, retries, resumed };
}
