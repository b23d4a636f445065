import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import { Harness, blob, fetchRaw, sha256 } from './fixtures.ts';
import type { ContentCache } from '../src/cacheServer.ts';

const h = new Harness();
afterEach(() => h.cleanup());

/** Sends bytes exactly as written (no client-side normalisation) and returns the status line. */
function raw(cache: ContentCache, request: string): Promise<string> {
  const addr = cache.address()!;
  return new Promise((resolve, reject) => {
    const socket = net.connect(addr.port, addr.address);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (data += d));
    socket.on('error', reject);
    socket.on('close', () => resolve(data.split('\r\n')[0] ?? ''));
    socket.end(request);
  });
}

async function setup() {
  const origin = await h.origin();
  const body = blob(100_000);
  origin.objects.set('/ok/file', { body });
  const cache = await h.cache({ originHosts: [origin.host] });
  const hash = sha256(body);
  await fetchRaw(`${cache.url}/sha256/${hash}`, { headers: { 'x-origin-url': `${origin.url}/ok/file` } });
  return { origin, body, cache, hash };
}

describe('hostile requests', () => {
  it.each([
    ['dot segments in a content path', '/sha256/../../etc/passwd', 404],
    ['encoded slashes in a content path', '/sha256/..%2f..%2fetc%2fpasswd', 400],
    ['dot segments in URL mode', '/ok/../../etc/passwd?cacheHostOrigin=ORIGIN', 400],
    ['encoded slash in URL mode', '/ok%2ffile?cacheHostOrigin=ORIGIN', 400],
    ['encoded dots in URL mode', '/ok/%2e%2e/secret?cacheHostOrigin=ORIGIN', 400],
    ['backslash in URL mode', '/ok\\..\\file?cacheHostOrigin=ORIGIN', 400],
    ['double slash in URL mode', '//evil.example/x?cacheHostOrigin=ORIGIN', 400],
  ])('refuses %s', async (_name, target, status) => {
    const { cache, origin } = await setup();
    const line = await raw(cache, `GET ${target.replace('ORIGIN', origin.host)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(line).toBe(`HTTP/1.1 ${status} ${status === 400 ? 'Bad Request' : 'Not Found'}`);
    expect(origin.requests.map((r) => r.path)).toEqual(['/ok/file']);
  });

  it('refuses content origins outside the configured hosts, when configured', async () => {
    const origin = await h.origin();
    const body = blob(1000);
    origin.objects.set('/ok/file', { body });
    const cache = await h.cache({ contentOriginHosts: ['updates.example.com'] });
    const r = await fetchRaw(`${cache.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${origin.url}/ok/file` } });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body.toString())).toMatchObject({ error: 'ORIGIN_NOT_ALLOWED' });
    expect(origin.requests).toHaveLength(0);
    const open = await h.cache({ contentOriginHosts: ['updates.example.com', origin.host] });
    expect((await fetchRaw(`${open.url}/sha256/${sha256(body)}`, { headers: { 'x-origin-url': `${origin.url}/ok/file` } })).status).toBe(200);
  });

  it('refuses absolute-form targets (proxy requests)', async () => {
    const { cache, origin } = await setup();
    const line = await raw(cache, `GET http://${origin.host}/ok/file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(line).toMatch(/^HTTP\/1\.1 400/);
  });

  it('answers oversized headers with 431', async () => {
    const { cache } = await setup();
    const line = await raw(cache, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(64 * 1024)}\r\n\r\n`);
    expect(line).toMatch(/^HTTP\/1\.1 431/);
  });

  it.each([
    ['malformed', 'bytes=abc'],
    ['huge', `bytes=${Array.from({ length: 1500 }, (_, i) => `${i * 2}-${i * 2}`).join(',')}`],
    ['absurd numbers', 'bytes=0-99999999999999999999999999'],
    ['negative', 'bytes=-1-2'],
    ['whitespace only', 'bytes=   '],
    ['many overlapping', `bytes=${Array.from({ length: 200 }, () => '0-99999').join(',')}`],
  ])('answers a %s Range header with the whole object', async (_name, range) => {
    const { cache, hash, body } = await setup();
    const r = await fetchRaw(`${cache.url}/sha256/${hash}`, { headers: { range } });
    expect(r.status).toBe(200);
    expect(r.body.equals(body)).toBe(true);
  });

  it('keeps serving after a client hangs up mid-body', async () => {
    const { cache, hash, body } = await setup();
    const addr = cache.address()!;
    await new Promise<void>((resolve) => {
      const s = net.connect(addr.port, addr.address, () => s.write(`GET /sha256/${hash} HTTP/1.1\r\nHost: x\r\n\r\n`));
      s.once('data', () => {
        s.destroy();
        resolve();
      });
    });
    const r = await fetchRaw(`${cache.url}/sha256/${hash}`);
    expect(r.body.equals(body)).toBe(true);
  });
});
