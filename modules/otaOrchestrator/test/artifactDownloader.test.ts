import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ArtifactDownloader } from '../src/artifactDownloader.ts';
import type { DownloadRequest } from '../src/artifactDownloader.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import type { ArtifactServer } from './support/artifactServer.ts';

// The downloader on its own, for what the engine tests do not reach: https with a custom CA, redirects, a
// server that ignores Range, resuming a partial file left by an earlier process, cancellation, the space check.

const data = randomBytes(3 * 1024 * 1024 + 123);
const sha256 = createHash('sha256').update(data).digest('base64');
const fast = { backoffMs: () => 10, reserveBytes: 0 };

let dir: string;
let server: ArtifactServer;
const extraServers: Server[] = [];

beforeAll(async () => {
  server = await startArtifactServer();
  server.put('a.bin', data);
});

afterAll(async () => {
  await server.close();
});

afterEach(async () => {
  server.throttle(0);
  for (const s of extraServers.splice(0)) {
    s.closeAllConnections();
    await new Promise((resolve) => s.close(resolve));
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function request(overrides: Partial<DownloadRequest> = {}): DownloadRequest {
  dir = mkdtempSync(path.join(tmpdir(), 'downloader-'));
  return { sources: [{ url: `${server.baseUrl}/files/a.bin` }], sha256, sizeInBytes: data.length, destination: path.join(dir, 'a.bin'), ...overrides };
}

async function listen(s: Server): Promise<number> {
  extraServers.push(s);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return (s.address() as AddressInfo).port;
}

describe('ArtifactDownloader', () => {
  it('downloads over plain http, verifies, and only then gives the file its name', async () => {
    const req = request();
    let last = 0;
    await new ArtifactDownloader(fast).download({ ...req, onProgress: (done) => (last = done) });
    expect(readFileSync(req.destination).equals(data)).toBe(true);
    expect(existsSync(`${req.destination}.part`)).toBe(false);
    expect(last).toBe(data.length);
  });

  it('decodes a chunked response (no Content-Length)', async () => {
    const port = await listen(createServer((_req, res) => {
      res.writeHead(200);
      for (let at = 0; at < data.length; at += 100_000) res.write(data.subarray(at, at + 100_000));
      res.end();
    }));
    const req = request({ sources: [{ url: `http://127.0.0.1:${port}/a.bin` }] });
    await new ArtifactDownloader(fast).download(req);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('downloads over https with the request\'s CA bundle, and refuses a server it cannot verify', async () => {
    const certDir = mkdtempSync(path.join(tmpdir(), 'downloader-tls-'));
    try {
      const key = path.join(certDir, 'key.pem');
      const cert = path.join(certDir, 'cert.pem');
      await promisify(execFile)('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
      ]);
      const port = await listen(createHttpsServer({ key: readFileSync(key), cert: readFileSync(cert) }, (_req, res) => {
        res.writeHead(200, { 'content-length': data.length }).end(data);
      }));
      const url = `https://127.0.0.1:${port}/a.bin`;
      const req = request({ sources: [{ url }], ca: readFileSync(cert, 'utf8') });
      await new ArtifactDownloader(fast).download(req);
      expect(readFileSync(req.destination).equals(data)).toBe(true);
      await expect(new ArtifactDownloader({ ...fast, attemptsPerSource: 1 }).download(request({ sources: [{ url }] }))).rejects.toMatchObject({ code: 'DOWNLOAD_CONNECTION_FAILED' });
    } finally {
      rmSync(certDir, { recursive: true, force: true });
    }
  });

  it('does not follow a redirect: the source is skipped for the next one', async () => {
    const port = await listen(createServer((_req, res) => res.writeHead(302, { location: `${server.baseUrl}/files/a.bin` }).end()));
    const before = server.requests.length;
    const req = request({ sources: [{ url: `http://127.0.0.1:${port}/a.bin` }, { url: `${server.baseUrl}/files/a.bin?second` }] });
    await new ArtifactDownloader(fast).download(req);
    expect(server.requests.slice(before).map((r) => r.path)).toEqual(['/files/a.bin?second']);
    await expect(new ArtifactDownloader(fast).download(request({ sources: [{ url: `http://127.0.0.1:${port}/a.bin` }] }))).rejects.toMatchObject({
      code: 'DOWNLOAD_HTTP_ERROR',
      message: expect.stringMatching(/HTTP 302/) as unknown,
    });
  });

  it('continues a partial file left by an earlier process with a Range request', async () => {
    const req = request();
    const kept = 1_000_001;
    writeFileSync(`${req.destination}.part`, data.subarray(0, kept));
    const before = server.requests.length;
    await new ArtifactDownloader(fast).download(req);
    expect(server.requests.slice(before).map((r) => r.range)).toEqual([`bytes=${kept}-`]);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('starts over when the server ignores Range', async () => {
    const port = await listen(createServer((_req, res) => res.writeHead(200, { 'content-length': data.length }).end(data)));
    const req = request({ sources: [{ url: `http://127.0.0.1:${port}/a.bin` }] });
    writeFileSync(`${req.destination}.part`, Buffer.alloc(500_000, 1));
    await new ArtifactDownloader(fast).download(req);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('throws a partial file with a wrong byte away, so the next source starts from zero', async () => {
    const req = request({ sources: [{ url: `${server.baseUrl}/files/a.bin` }, { url: `${server.baseUrl}/files/a.bin?second` }] });
    const poisoned = Buffer.from(data.subarray(0, 2_000_000));
    poisoned[10] = (poisoned[10] ?? 0) ^ 1;
    writeFileSync(`${req.destination}.part`, poisoned);
    const before = server.requests.length;
    await new ArtifactDownloader(fast).download(req);
    expect(server.requests.slice(before).map((r) => r.range)).toEqual(['bytes=2000000-', undefined]);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });

  it('stops with the abort reason when cancelled, keeping what arrived for later', async () => {
    server.throttle(64 * 1024);
    const controller = new AbortController();
    const req = request({ signal: controller.signal });
    let seen = 0;
    const downloading = new ArtifactDownloader(fast).download({
      ...req,
      onProgress: (done) => {
        seen = done;
        if (done >= 1024 * 1024) controller.abort(new Error('job cancelled'));
      },
    });
    await expect(downloading).rejects.toThrow('job cancelled');
    expect(seen).toBeGreaterThanOrEqual(1024 * 1024);
    expect(readFileSync(`${req.destination}.part`).equals(data.subarray(0, seen))).toBe(true);
    expect(existsSync(req.destination)).toBe(false);
  });

  it('refuses to start without the free space the artifact needs', async () => {
    const before = server.requests.length;
    await expect(new ArtifactDownloader({ ...fast, reserveBytes: Number.MAX_SAFE_INTEGER }).download(request())).rejects.toMatchObject({ code: 'DOWNLOAD_DISK_FULL' });
    expect(server.requests.length).toBe(before);
  });

  it('retries a connection that breaks, continuing from the bytes already written', async () => {
    server.misbehave('a.bin', 'truncate', 2);
    const before = server.requests.length;
    const req = request();
    await new ArtifactDownloader(fast).download(req);
    const ranges = server.requests.slice(before).map((r) => r.range);
    expect(ranges).toHaveLength(3);
    expect(ranges[0]).toBeUndefined();
    expect(ranges[1]).toBe(`bytes=${Math.floor(data.length / 2)}-`);
    expect(readFileSync(req.destination).equals(data)).toBe(true);
  });
});

describe('ArtifactDownloader on a disk that fills up (real tmpfs)', () => {
  let mountPoint: string | undefined;
  let skipReason = '';

  beforeAll(async () => {
    const candidate = mkdtempSync(path.join(tmpdir(), 'downloader-tmpfs-'));
    try {
      await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', candidate]);
      mountPoint = candidate;
    } catch (error) {
      rmSync(candidate, { recursive: true, force: true });
      skipReason = `cannot mount a tmpfs (needs root): ${(error as Error).message.split('\n')[0] ?? ''}`;
    }
  });

  afterAll(async () => {
    if (!mountPoint) return;
    await promisify(execFile)('umount', [mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('stops with DOWNLOAD_DISK_FULL when a write fails for space, keeps what was written, and tries no other source', async (ctx) => {
    if (!mountPoint) return ctx.skip(skipReason);
    const destination = path.join(mountPoint, 'a.bin');
    const before = server.requests.length;
    let filled = false;
    const downloading = new ArtifactDownloader(fast).download({
      sources: [{ url: `${server.baseUrl}/files/a.bin` }, { url: `${server.baseUrl}/files/a.bin?second` }],
      sha256,
      sizeInBytes: data.length,
      destination,
      onProgress: (done) => {
        // Something else takes the space once the download is under way (the start-up check passed).
        if (done >= 1024 * 1024 && !filled) {
          filled = true;
          writeFileSync(path.join(mountPoint!, 'filler'), Buffer.alloc(2 * 1024 * 1024));
        }
      },
    });
    await expect(downloading).rejects.toMatchObject({ code: 'DOWNLOAD_DISK_FULL' });
    expect(server.requests.length - before).toBe(1);
    expect(existsSync(destination)).toBe(false);
    const kept = readFileSync(`${destination}.part`);
    expect(kept.length).toBeGreaterThan(0);
    expect(kept.equals(data.subarray(0, kept.length))).toBe(true);
  });
});
