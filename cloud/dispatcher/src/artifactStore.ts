import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import path from 'node:path';
import { DispatcherError } from './errors.ts';

// Where update files live and how a device gets them: content-addressed blobs and expiring signed download
// URLs. The local store keeps files on disk and its URLs are answered by the dispatcher's own HTTP server;
// an Azure Blob store would implement the same interface with SAS URLs.

export interface StoredArtifact {
  /** Content address: lowercase hex sha256. */
  key: string;
  sizeInBytes: number;
  /** base64 sha256, as manifests carry it. */
  sha256: string;
}

export interface ArtifactStore {
  put(bytes: Buffer): Promise<StoredArtifact>;
  has(key: string): boolean;
  /** A URL that downloads the artifact until `expiresAt`, without any other credential. */
  signedUrl(key: string, filename: string, expiresAt: Date): string;
  /** The same artifact's URL issued again (current address, new expiry); undefined if the URL is not one of ours. */
  reissueUrl(url: string, expiresAt: Date): string | undefined;
}

export interface ArtifactDownload {
  sizeInBytes: number;
  open(): Readable;
}

const KEY = /^[0-9a-f]{64}$/;

export class LocalArtifactStore implements ArtifactStore {
  readonly #dir: string;
  readonly #secret: Buffer;
  #baseUrl: string;

  /** `baseUrl` is where the dispatcher serves `/artifacts/`; it may be set once the server listens. */
  constructor(dir: string, baseUrl = 'http://127.0.0.1') {
    this.#dir = dir;
    mkdirSync(dir, { recursive: true });
    // The URL-signing secret survives restarts, so URLs already handed out in manifests stay valid.
    const secretFile = path.join(dir, '.url-secret');
    if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('base64'), { mode: 0o600, flag: 'wx' });
    this.#secret = Buffer.from(readFileSync(secretFile, 'utf8'), 'base64');
    this.#baseUrl = baseUrl.replace(/\/+$/, '');
  }

  setBaseUrl(baseUrl: string): void {
    this.#baseUrl = baseUrl.replace(/\/+$/, '');
  }

  async put(bytes: Buffer): Promise<StoredArtifact> {
    const digest = createHash('sha256').update(bytes).digest();
    const key = digest.toString('hex');
    const file = path.join(this.#dir, key);
    if (!existsSync(file)) {
      // Write then rename: a crash never leaves a half file under a content address.
      const temp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(temp, bytes);
      await rename(temp, file);
    }
    return { key, sizeInBytes: bytes.length, sha256: digest.toString('base64') };
  }

  has(key: string): boolean {
    return KEY.test(key) && existsSync(path.join(this.#dir, key));
  }

  signedUrl(key: string, filename: string, expiresAt: Date): string {
    const se = Math.floor(expiresAt.getTime() / 1000);
    return `${this.#baseUrl}/artifacts/${key}/${encodeURIComponent(filename)}?se=${se}&sig=${this.#sign(key, se)}`;
  }

  reissueUrl(url: string, expiresAt: Date): string | undefined {
    const match = /\/artifacts\/([0-9a-f]{64})\/([^/?]+)(?:\?|$)/.exec(url);
    if (!match) return undefined;
    return this.signedUrl(match[1]!, decodeURIComponent(match[2]!), expiresAt);
  }

  /** Checks a download request's signature and expiry; the file name in the path is cosmetic. */
  open(key: string, se: string | null, sig: string | null, now = Date.now()): ArtifactDownload {
    const expiry = Number(se);
    if (!KEY.test(key) || !sig || !Number.isInteger(expiry)) throw new DispatcherError('ARTIFACT_URL_INVALID');
    const expected = Buffer.from(this.#sign(key, expiry));
    const presented = Buffer.from(sig);
    if (expected.length !== presented.length || !timingSafeEqual(expected, presented)) throw new DispatcherError('ARTIFACT_URL_INVALID');
    if (expiry * 1000 < now) throw new DispatcherError('ARTIFACT_URL_INVALID', 'the download URL has expired');
    const file = path.join(this.#dir, key);
    if (!existsSync(file)) throw new DispatcherError('ARTIFACT_NOT_FOUND');
    return { sizeInBytes: statSync(file).size, open: () => createReadStream(file) };
  }

  #sign(key: string, se: number): string {
    return createHmac('sha256', this.#secret).update(`${key}\n${se}`).digest('base64url');
  }
}
