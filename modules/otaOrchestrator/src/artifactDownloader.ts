import { OtaError, isOtaError } from '@edge-ota/common';
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { mkdir, open, rename, rm, stat, statfs } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import path from 'node:path';
import { hashFile } from './fileHash.ts';
import { PipelinedFileWriter } from './pipelinedFileWriter.ts';
import { plainHttpGet } from './plainHttpGet.ts';
import type { DownloadResponse } from './plainHttpGet.ts';

// Downloads one artifact to disk, streaming: bytes are hashed as they are written, a partial file survives a
// restart and is continued with an HTTP Range request, several sources are tried in order (the gateway's content
// cache first, then the origin), transient failures are retried with backoff, and the file only gets its final
// name once its sha256 matches the signed manifest.

export interface ArtifactSource {
  url: string;
  headers?: Record<string, string>;
}

export interface DownloadRequest {
  sources: ReadonlyArray<ArtifactSource>;
  /** base64 sha256 from the signed manifest */
  sha256: string;
  sizeInBytes: number;
  /** Final path; the partial file is `<destination>.part`. */
  destination: string;
  signal?: AbortSignal;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** CA bundle for https sources (e.g. the IoT Edge trust bundle). */
  ca?: string;
}

export interface DownloadPolicy {
  /** Attempts per source for transient failures (connection reset, 5xx, short body). */
  attemptsPerSource: number;
  backoffMs: (attempt: number) => number;
  /** Free space to keep on the volume beyond the artifact itself. */
  reserveBytes: number;
  /** No byte for this long: the connection is treated as dead. */
  idleTimeoutMs: number;
}

export const defaultDownloadPolicy: DownloadPolicy = {
  attemptsPerSource: 4,
  backoffMs: (attempt) => Math.min(30_000, 500 * 2 ** attempt),
  reserveBytes: 32 * 1024 * 1024,
  idleTimeoutMs: 60_000,
};

const progressEveryBytes = 1024 * 1024;
/** O_DIRECT writes are made in whole 4 KiB blocks: the largest logical block size of common disks. */
const directAlignment = 4096;
const copyChunkBytes = 1024 * 1024;
/** While downloading, written data is flushed to disk every this many bytes, so the final fsync has little left. */
const flushEveryBytes = 64 * 1024 * 1024;

export class ArtifactDownloader {
  readonly #policy: DownloadPolicy;

  constructor(policy: Partial<DownloadPolicy> = {}) {
    this.#policy = { ...defaultDownloadPolicy, ...policy };
  }

  async download(request: DownloadRequest): Promise<void> {
    if (request.sources.length === 0) throw new OtaError('DOWNLOAD_CONNECTION_FAILED', 'no source URL for the artifact');
    const partial = `${request.destination}.part`;
    await mkdir(path.dirname(request.destination), { recursive: true });
    if (await verifiedAlready(request)) return;
    let lastError: unknown;
    for (const source of request.sources) {
      for (let attempt = 0; attempt < this.#policy.attemptsPerSource; attempt += 1) {
        request.signal?.throwIfAborted();
        try {
          await this.#attempt(request, source, partial);
          await rename(partial, request.destination);
          return;
        } catch (error) {
          lastError = error;
          if (request.signal?.aborted) throw request.signal.reason;
          const verdict = classify(error);
          if (verdict === 'fatal') throw error;
          if (verdict === 'nextSource') break;
          await sleep(this.#policy.backoffMs(attempt), request.signal);
        }
      }
    }
    throw isOtaError(lastError) ? lastError : new OtaError('DOWNLOAD_CONNECTION_FAILED', `every source failed: ${String(lastError)}`, { cause: lastError });
  }

  /** One request: continue the partial file from where it ends, hash everything, verify at the end. */
  async #attempt(request: DownloadRequest, source: ArtifactSource, partial: string): Promise<void> {
    const size = request.sizeInBytes;
    let have = await fileSize(partial);
    if (have > size) {
      await rm(partial, { force: true });
      have = 0;
    }
    await this.#checkFreeSpace(partial, size - have);
    const hash = createHash('sha256');
    if (have > 0) await hashFile(partial, hash, have);
    if (have === size) {
      await finish(partial, hash, request);
      return;
    }
    if (source.url.startsWith('file:')) {
      // A local copy (an extracted USB bundle): same checks, no HTTP.
      await copyLocal(new URL(source.url), partial, hash, have, request);
      await finish(partial, hash, request);
      return;
    }
    const response = await get(source, have, request, this.#policy.idleTimeoutMs);
    try {
      if (response.statusCode === 206) {
        const contentRange = response.header('content-range');
        const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange ?? '');
        if (!range || Number(range[1]) !== have) {
          throw new OtaError('DOWNLOAD_HTTP_ERROR', `${source.url}: 206 with Content-Range ${contentRange ?? '(none)'} for a request from byte ${have}`);
        }
      } else if (response.statusCode === 200) {
        // The server ignored Range: start over.
        if (have > 0) {
          hash.destroy();
          return this.#restart(request, partial, response);
        }
      } else {
        throw httpError(source.url, response.statusCode);
      }
      await this.#receive(response, partial, hash, have, request);
    } finally {
      response.close();
    }
    await finish(partial, hash, request);
  }

  async #restart(request: DownloadRequest, partial: string, response: DownloadResponse): Promise<void> {
    const hash = createHash('sha256');
    await this.#receive(response, partial, hash, 0, request);
    await finish(partial, hash, request);
  }

  async #receive(response: DownloadResponse, partial: string, hash: Hash, startAt: number, request: DownloadRequest): Promise<void> {
    let received = startAt;
    let reported = startAt;
    let flushedTo = startAt;
    let flushing: Promise<void> | undefined;
    let flushError: unknown;
    const file = await open(partial, startAt === 0 ? 'w' : 'r+').catch((error: unknown) => {
      throw storageError(error);
    });
    const direct = await openDirect(partial).catch(async (error: unknown) => {
      await file.close();
      throw storageError(error);
    });
    // Each piece is hashed here and written by the thread pool (PipelinedFileWriter, straight to the disk where
    // O_DIRECT works), so receiving, hashing and writing overlap; memory stays at a few fixed buffers because the
    // writer pauses the connection when it falls behind. Through the page cache, an fdatasync every 64 MiB moves
    // written data to disk while the download goes on, so the final fsync has little left to do.
    const writer = new PipelinedFileWriter({ fd: file.fd, position: startAt, ...(direct ? { direct: { fd: direct.fd, alignment: directAlignment } } : {}) });
    const written = (): number => startAt + writer.writtenBytes;
    try {
      await response.readBody((chunk) => {
        if (received + chunk.length > request.sizeInBytes) {
          throw new OtaError('DOWNLOAD_TOO_LONG', `the server sent more than the ${request.sizeInBytes} bytes the manifest declares`);
        }
        hash.update(chunk);
        received += chunk.length;
        const pause = writer.push(chunk);
        if (received - reported >= progressEveryBytes) {
          reported = received;
          request.onProgress?.(received, request.sizeInBytes);
        }
        if (!direct && flushing === undefined && written() - flushedTo >= flushEveryBytes) {
          const upTo = written();
          flushing = file.datasync().then(
            () => {
              flushedTo = upTo;
              flushing = undefined;
            },
            (error: unknown) => {
              flushError = error;
            },
          );
        }
        return pause;
      });
      await writer.close();
      await flushing;
      if (flushError !== undefined) throw flushError as Error;
      // Data written reaches the disk before the file is verified and renamed.
      await file.sync();
    } catch (error) {
      // Every byte that arrived is written out (the file stays a prefix of the body), so the next attempt
      // continues after it; a write that fails makes this a storage error whatever else went wrong.
      const writeError = await writer.close().then(
        () => undefined,
        (closeError: unknown) => closeError as Error,
      );
      await flushing;
      if (writeError) throw storageError(writeError);
      if (isOtaError(error)) throw error;
      const { code, syscall } = error as NodeJS.ErrnoException;
      if (code === 'ENOSPC' || code === 'EDQUOT' || (syscall && ['write', 'fsync', 'fdatasync'].includes(syscall))) throw storageError(error);
      throw new OtaError('DOWNLOAD_CONNECTION_FAILED', `the connection broke after ${written()} of ${request.sizeInBytes} bytes: ${(error as Error).message}`, { cause: error });
    } finally {
      await direct?.close();
      await file.close();
    }
    request.onProgress?.(received, request.sizeInBytes);
    if (received < request.sizeInBytes) {
      throw new OtaError('DOWNLOAD_TRUNCATED', `the connection ended after ${received} of ${request.sizeInBytes} bytes`);
    }
  }

  async #checkFreeSpace(partial: string, needed: number): Promise<void> {
    const fs = await statfs(path.dirname(partial));
    const free = Number(fs.bavail) * Number(fs.bsize);
    if (free < needed + this.#policy.reserveBytes) {
      throw new OtaError('DOWNLOAD_DISK_FULL', `${needed} bytes needed in ${path.dirname(partial)} (plus ${this.#policy.reserveBytes} reserve), ${free} free`);
    }
  }
}

/**
 * The partial file opened again with O_DIRECT, or undefined where the filesystem or platform does not offer it
 * (then everything goes through the page cache).
 */
async function openDirect(file: string): Promise<FileHandle | undefined> {
  if (constants.O_DIRECT === undefined) return undefined;
  try {
    return await open(file, constants.O_WRONLY | constants.O_DIRECT);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EINVAL') return undefined;
    throw error;
  }
}

function storageError(error: unknown): OtaError {
  const { code } = error as NodeJS.ErrnoException;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new OtaError('DOWNLOAD_DISK_FULL', `disk full while writing the artifact: ${(error as Error).message}`, { cause: error });
  return new OtaError('DOWNLOAD_STORAGE_ERROR', `writing the artifact failed: ${(error as Error).message}`, { cause: error });
}

async function copyLocal(url: URL, partial: string, hash: Hash, from: number, request: DownloadRequest): Promise<void> {
  let size: number;
  try {
    size = (await stat(url)).size;
  } catch (error) {
    throw new OtaError('DOWNLOAD_HTTP_ERROR', `${url.pathname}: ${(error as Error).message}`, { cause: error });
  }
  if (size > request.sizeInBytes) throw new OtaError('DOWNLOAD_TOO_LONG', `${url.pathname} is larger than the ${request.sizeInBytes} bytes the manifest declares`);
  const file = await open(partial, from === 0 ? 'w' : 'a');
  let done = from;
  try {
    for await (const chunk of createReadStream(url, { start: from, highWaterMark: copyChunkBytes }) as AsyncIterable<Buffer>) {
      request.signal?.throwIfAborted();
      hash.update(chunk);
      await file.write(chunk);
      done += chunk.length;
      request.onProgress?.(done, request.sizeInBytes);
    }
    await file.sync();
  } finally {
    await file.close();
  }
  if (done < request.sizeInBytes) throw new OtaError('DOWNLOAD_TRUNCATED', `${url.pathname} has ${done} of ${request.sizeInBytes} bytes`);
}

async function verifiedAlready(request: DownloadRequest): Promise<boolean> {
  if ((await fileSize(request.destination)) !== request.sizeInBytes) return false;
  const hash = createHash('sha256');
  await hashFile(request.destination, hash, request.sizeInBytes);
  return hash.digest('base64') === request.sha256;
}

async function finish(partial: string, hash: Hash, request: DownloadRequest): Promise<void> {
  const actual = hash.digest('base64');
  if (actual !== request.sha256) {
    // A wrong byte anywhere poisons the whole partial file: start from zero next time.
    await rm(partial, { force: true });
    throw new OtaError('DOWNLOAD_HASH_MISMATCH', `sha256 ${actual} does not match the signed ${request.sha256}`);
  }
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

/**
 * Plain http (the gateway's content cache) goes through the small client in plainHttpGet.ts, which reads 1 MiB at
 * a time into one buffer; https keeps Node's client, with its certificate checks and the request's CA bundle.
 */
function get(source: ArtifactSource, from: number, request: DownloadRequest, idleTimeoutMs: number): Promise<DownloadResponse> {
  const url = new URL(source.url);
  // file: sources never get here (see #attempt).
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return Promise.reject(new OtaError('DOWNLOAD_HTTP_ERROR', `unsupported URL scheme ${url.protocol}`));
  const headers: Record<string, string> = { ...source.headers, 'accept-encoding': 'identity' };
  if (from > 0) headers.range = `bytes=${from}-`;
  const connectionFailed = (error: Error): Error =>
    isOtaError(error) || request.signal?.aborted ? error : new OtaError('DOWNLOAD_CONNECTION_FAILED', `${url.host}: ${error.message}`, { cause: error });
  if (url.protocol === 'http:') {
    return plainHttpGet(url, { headers, idleTimeoutMs, signal: request.signal }).catch((error: unknown) => {
      throw connectionFailed(error as Error);
    });
  }
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { headers, ca: request.ca, signal: request.signal }, (response) => resolve(nodeResponse(response)));
    req.setTimeout(idleTimeoutMs, () => req.destroy(new OtaError('DOWNLOAD_CONNECTION_FAILED', `${url.host}: no data for ${idleTimeoutMs} ms`)));
    req.on('error', (error) => reject(connectionFailed(error)));
    req.end();
  });
}

/** Node's response behind the same interface; its chunks are fresh buffers, handed on as they arrive. */
function nodeResponse(response: IncomingMessage): DownloadResponse {
  return {
    statusCode: response.statusCode ?? 0,
    header: (name) => {
      const value = response.headers[name.toLowerCase()];
      return Array.isArray(value) ? value.join(', ') : value;
    },
    readBody: async (sink) => {
      for await (const chunk of response as AsyncIterable<Buffer>) {
        const pause = sink(chunk);
        if (pause) await pause;
      }
    },
    close: () => response.destroy(),
  };
}

function httpError(url: string, status: number): OtaError {
  const error = new OtaError('DOWNLOAD_HTTP_ERROR', `${new URL(url).host} answered HTTP ${status}`);
  (error as OtaError & { httpStatus: number }).httpStatus = status;
  return error;
}

/** retry: same source again after a pause; nextSource: this source cannot serve it; fatal: no source can help. */
function classify(error: unknown): 'retry' | 'nextSource' | 'fatal' {
  if (!isOtaError(error)) return 'retry';
  switch (error.code) {
    case 'DOWNLOAD_DISK_FULL':
    case 'DOWNLOAD_STORAGE_ERROR':
      return 'fatal';
    case 'DOWNLOAD_HASH_MISMATCH':
    case 'DOWNLOAD_TOO_LONG':
      return 'nextSource';
    case 'DOWNLOAD_HTTP_ERROR': {
      const status = (error as OtaError & { httpStatus?: number }).httpStatus ?? 0;
      return status >= 500 || status === 408 || status === 429 ? 'retry' : 'nextSource';
    }
    default:
      return 'retry';
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    }, { once: true });
  });
}
