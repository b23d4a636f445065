import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile, rename, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { OtaError } from '@edge-ota/common';

// Fetches an MCU image over HTTP (normally the gateway's content cache) to a file under the state dir, checking
// size and SHA-256 as the bytes arrive: more bytes than declared stop the download, and nothing is kept that
// does not match. A file already there with the right hash (after a restart) is used without downloading again.

export interface ImageDownload {
  url: string;
  /** Base64 SHA-256 of the whole file. */
  sha256: string;
  /** Declared size; unknown on the twin path, then bounded by maxBytes. */
  sizeInBytes?: number;
  file: string;
  maxBytes?: number;
  signal?: AbortSignal;
}

export async function downloadImage(download: ImageDownload): Promise<Uint8Array> {
  const existing = await readFile(download.file).catch(() => undefined);
  if (existing && createHash('sha256').update(existing).digest('base64') === download.sha256) return new Uint8Array(existing);

  const limit = download.sizeInBytes ?? download.maxBytes ?? 16 * 1024 * 1024;
  let response: Response;
  try {
    response = await fetch(download.url, { ...(download.signal ? { signal: download.signal } : {}) });
  } catch (error) {
    throw new OtaError('DOWNLOAD_CONNECTION_FAILED', `${download.url}: ${(error as Error).message}`, { cause: error });
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel().catch(() => undefined);
    throw new OtaError('DOWNLOAD_HTTP_ERROR', `${download.url} answered HTTP ${response.status}`);
  }
  const partial = `${download.file}.part`;
  const out = createWriteStream(partial);
  const hash = createHash('sha256');
  let received = 0;
  try {
    for await (const chunk of response.body) {
      const bytes = chunk as Uint8Array;
      received += bytes.length;
      if (received > limit) throw new OtaError('DOWNLOAD_TOO_LONG', `${download.url} sent more than the ${limit} bytes declared`);
      hash.update(bytes);
      if (!out.write(bytes)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
  } catch (error) {
    out.destroy();
    await rm(partial, { force: true });
    if (error instanceof OtaError) throw error;
    throw new OtaError('DOWNLOAD_CONNECTION_FAILED', `${download.url}: ${(error as Error).message}`, { cause: error });
  }
  if (download.sizeInBytes !== undefined && received < download.sizeInBytes) {
    await rm(partial, { force: true });
    throw new OtaError('DOWNLOAD_TRUNCATED', `${download.url} sent ${received} of ${download.sizeInBytes} bytes`);
  }
  if (hash.digest('base64') !== download.sha256) {
    await rm(partial, { force: true });
    throw new OtaError('DOWNLOAD_HASH_MISMATCH', `${download.url} does not match its declared sha256`);
  }
  await rename(partial, download.file);
  return new Uint8Array(await readFile(download.file));
}

/** A check value given as hex (the firmware-update tutorial) or base64, as base64; undefined when it is neither. */
export function sha256AsBase64(value: string): string | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, 'hex').toString('base64');
  if (/^[A-Za-z0-9+/]{43}=$/.test(value)) return value;
  return undefined;
}
