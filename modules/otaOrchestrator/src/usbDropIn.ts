import { BUNDLE_EXTENSION, OtaError, isOtaError, matchCompatibility, readBundle } from '@edge-ota/common';
import type { TrustStore, UpdateDelivery } from '@edge-ota/common';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { hashFile } from './fileHash.ts';
import type { UpdateEngine } from './updateEngine.ts';

// The USB drop-in: a directory (the bind-mounted mount point of a stick) watched for offline bundles. A bundle is
// read once its size has stopped changing (a stick still being copied is left alone), verified end to end
// (signature chain, every file's hash, no path tricks), its files are handed to the content cache, and a job is
// started for every target on this gateway the update is compatible with. Everything runs without the cloud;
// the jobs' feedback waits in the outbox and reaches the dispatcher when the gateway is online again.

export interface UsbDropInResult {
  bundle: string;
  status: 'queued' | 'rejected' | 'notForThisGateway' | 'alreadyProcessed';
  jobIds: string[];
  resultCode?: number;
  extendedResultCode?: number;
  details?: string;
}

export interface UsbDropInOptions {
  dir: string;
  workDir: string;
  trustStore: TrustStore;
  engine: UpdateEngine;
  /** Every device this gateway updates, with its compatibility properties (the gateway itself included). */
  targets: () => Array<{ deviceId: string; properties: Record<string, string> }>;
  /** The content cache to hand files to (so MCU flashes and children can fetch them); optional. */
  contentCache?: { url: string; adminToken?: string } | undefined;
  /** Called after the root key package the bundle carried was adopted, so it can be persisted. */
  onRootKeyPackage?: () => void;
  onResult?: (result: UsbDropInResult) => void;
  pollMs?: number;
  log?: (line: string) => void;
}

export class UsbDropIn {
  readonly #options: UsbDropInOptions;
  readonly #lastSeen = new Map<string, string>();
  readonly #done = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #scanning: Promise<void> | undefined;

  constructor(options: UsbDropInOptions) {
    this.#options = options;
  }

  start(): void {
    const tick = (): void => {
      this.#scanning = this.scan()
        .then(() => undefined)
        .catch((error: unknown) => this.#options.log?.(`usb drop-in: ${(error as Error).message}`))
        .finally(() => {
          this.#scanning = undefined;
          this.#timer = setTimeout(tick, this.#options.pollMs ?? 2_000);
        });
    };
    tick();
  }

  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#scanning;
  }

  /** One pass over the directory; returns what it did with the bundles that were ready. */
  async scan(): Promise<UsbDropInResult[]> {
    let names: string[];
    try {
      names = (await readdir(this.#options.dir)).filter((n) => n.endsWith(BUNDLE_EXTENSION)).sort();
    } catch {
      return []; // no stick mounted
    }
    const results: UsbDropInResult[] = [];
    for (const name of names) {
      const file = path.join(this.#options.dir, name);
      let key: string;
      try {
        const info = await stat(file);
        key = `${info.size}:${info.mtimeMs}`;
      } catch {
        continue;
      }
      // Ready only when two scans in a row saw the same size and time: a copy in progress keeps changing.
      const previous = this.#lastSeen.get(name);
      this.#lastSeen.set(name, key);
      if (previous !== key || this.#done.has(`${name}:${key}`)) continue;
      this.#done.add(`${name}:${key}`);
      const result = await this.#process(file);
      this.#options.log?.(`usb drop-in: ${name}: ${result.status}${result.details ? ` (${result.details})` : ''}`);
      this.#options.onResult?.(result);
      results.push(result);
    }
    return results;
  }

  async #process(file: string): Promise<UsbDropInResult> {
    const bundle = path.basename(file);
    const digest = await sha256File(file).catch(() => undefined);
    if (!digest) return { bundle, status: 'rejected', jobIds: [], details: 'the bundle could not be read (stick removed?)' };
    const extractTo = path.join(this.#options.workDir, digest.slice(0, 32));
    await rm(extractTo, { recursive: true, force: true });
    await mkdir(extractTo, { recursive: true });
    try {
      const verified = await readBundle(file, { trustStore: this.#options.trustStore, extractTo });
      if (verified.rootKeyPackage?.status === 'applied') this.#options.onRootKeyPackage?.();
      const targets = this.#options.targets().filter((t) => {
        try {
          matchCompatibility(verified.manifest.compatibility, t.properties);
          return true;
        } catch {
          return false;
        }
      });
      if (targets.length === 0) {
        await rm(extractTo, { recursive: true, force: true });
        return { bundle, status: 'notForThisGateway', jobIds: [], details: `no device on this gateway matches ${JSON.stringify(verified.manifest.compatibility)}` };
      }
      if (this.#options.contentCache) {
        for (const entry of verified.files) if (entry.path) await importToCache(this.#options.contentCache, entry.path, entry.sha256);
      }
      const fileUrls: Record<string, string> = {};
      for (const entry of verified.files) if (entry.path) fileUrls[entry.fileId] = pathToFileURL(entry.path).href;
      const jobIds: string[] = [];
      const manifestKey = verified.manifest.edgeOta?.manifestId ?? digest.slice(0, 16);
      for (const target of targets) {
        const delivery: UpdateDelivery = {
          workflow: { action: 3, id: `usb-${manifestKey}-${target.deviceId}`.replace(/[^A-Za-z0-9._:-]/g, '_').slice(0, 128) },
          updateManifest: verified.manifestBytes.toString('utf8'),
          updateManifestSignature: verified.signature,
          fileUrls,
          target: { deviceId: target.deviceId },
        };
        const reply = this.#options.engine.submit(delivery, 'usb');
        if (reply.accepted) jobIds.push(reply.jobId);
        else this.#options.log?.(`usb drop-in: ${bundle} for ${target.deviceId}: ${reply.resultDetails ?? 'rejected'}`);
      }
      return jobIds.length > 0
        ? { bundle, status: 'queued', jobIds }
        : { bundle, status: 'alreadyProcessed', jobIds, details: 'every job of this bundle is known already or was refused' };
    } catch (error) {
      await rm(extractTo, { recursive: true, force: true });
      const otaError = isOtaError(error) ? error : new OtaError('BUNDLE_MALFORMED', (error as Error).message, { cause: error });
      return { bundle, status: 'rejected', jobIds: [], resultCode: otaError.resultCode, extendedResultCode: otaError.extendedResultCode, details: `${otaError.code}: ${otaError.message}` };
    }
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await hashFile(file, hash);
  return hash.digest('hex');
}

/** PUT /admin/objects/<hex>?pin=1: the cache re-verifies the hash and keeps the file pinned for children. */
function importToCache(cache: { url: string; adminToken?: string }, file: string, sha256: string): Promise<void> {
  const hex = Buffer.from(sha256, 'base64').toString('hex');
  const url = new URL(`${cache.url}/admin/objects/${hex}?pin=1`);
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'PUT', headers: { 'content-type': 'application/octet-stream', ...(cache.adminToken ? { authorization: `Bearer ${cache.adminToken}` } : {}) } }, (res) => {
      res.resume();
      res.on('end', () => ((res.statusCode ?? 500) < 300 ? resolve() : reject(new OtaError('CACHE_CONTENT_MISMATCH', `content cache refused ${path.basename(file)} (HTTP ${res.statusCode})`))));
    });
    req.on('error', (error) => reject(new OtaError('CACHE_UPSTREAM_UNREACHABLE', `content cache ${cache.url}: ${error.message}`, { cause: error })));
    createReadStream(file).on('error', reject).pipe(req);
  });
}
