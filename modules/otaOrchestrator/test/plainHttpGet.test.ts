import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { plainHttpGet } from '../src/plainHttpGet.ts';
import type { DownloadResponse } from '../src/plainHttpGet.ts';

// The client against a raw TCP server, so every byte on the wire (and every way of breaking it) is the test's.

interface Raw {
  url: string;
  requests: string[];
  close(): Promise<void>;
}

let servers: Server[] = [];

afterEach(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  servers = [];
});

/** `answer` gets the socket once the request head has arrived. */
async function raw(answer: (socket: Socket, request: string) => void): Promise<Raw> {
  const requests: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let head = '';
    socket.on('data', (data: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += data.toString('latin1');
      if (head.includes('\r\n\r\n')) {
        requests.push(head);
        answer(socket, head);
      }
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

async function body(response: DownloadResponse): Promise<Buffer> {
  const parts: Buffer[] = [];
  await response.readBody((chunk) => {
    parts.push(Buffer.from(chunk));
  });
  return Buffer.concat(parts);
}

const options = { headers: {}, idleTimeoutMs: 5000 };

describe('plainHttpGet', () => {
  it('sends one GET with Host, the caller\'s headers and Connection: close, and reads a Content-Length body', async () => {
    const server = await raw((s) => s.write('HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nContent-Range: bytes 3-7/8\r\nX-Two: a\r\nx-two: b\r\n\r\nhello'));
    const response = await plainHttpGet(new URL(`${server.url}/files/a%20b.bin?origin=x`), { ...options, headers: { range: 'bytes=3-', authorization: 'Bearer t' } });
    expect(response.statusCode).toBe(206);
    expect(response.header('content-range')).toBe('bytes 3-7/8');
    expect(response.header('X-Two')).toBe('a, b');
    expect((await body(response)).toString()).toBe('hello');
    const [request] = server.requests;
    expect(request?.split('\r\n')).toEqual([
      'GET /files/a%20b.bin?origin=x HTTP/1.1',
      `Host: ${new URL(server.url).host}`,
      'range: bytes=3-',
      'authorization: Bearer t',
      'Connection: close',
      '',
      '',
    ]);
  });

  it('reads a large body in the same segments as its head, byte for byte', async () => {
    const data = randomBytes(5 * 1024 * 1024 + 17);
    const server = await raw((s) => s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${data.length}\r\n\r\n`), data])));
    const hash = createHash('sha256');
    let chunks = 0;
    await (await plainHttpGet(new URL(server.url), options)).readBody((chunk) => {
      hash.update(chunk);
      chunks += 1;
    });
    expect(hash.digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(chunks).toBeLessThan(5 * 1024);
  });

  it('decodes a chunked body sent in small pieces, after a head sent one byte at a time', async () => {
    const server = await raw((s) => {
      const wire = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n';
      let i = 0;
      const timer = setInterval(() => {
        s.write(wire.slice(i, i + (i < 40 ? 1 : 5)));
        i += i < 40 ? 1 : 5;
        if (i >= wire.length) clearInterval(timer);
      }, 1);
    });
    expect((await body(await plainHttpGet(new URL(server.url), options))).toString()).toBe('abcdefg');
  });

  it('reads a body without length or chunking until the connection ends', async () => {
    const server = await raw((s) => s.end('HTTP/1.0 200 OK\r\n\r\nuntil the end'));
    expect((await body(await plainHttpGet(new URL(server.url), options))).toString()).toBe('until the end');
  });

  it('skips informational responses', async () => {
    const server = await raw((s) => s.end('HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'));
    const response = await plainHttpGet(new URL(server.url), options);
    expect(response.statusCode).toBe(200);
    expect(response.header('link')).toBeUndefined();
    expect((await body(response)).toString()).toBe('ok');
  });

  it('fails a body cut short, after handing over what did arrive', async () => {
    const server = await raw((s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf'));
    const response = await plainHttpGet(new URL(server.url), options);
    const parts: string[] = [];
    await expect(
      response.readBody((c) => {
        parts.push(c.toString());
      }),
    ).rejects.toThrow(/closed 6 bytes before the end/);
    expect(parts.join('')).toBe('half');
  });

  it('fails a chunked body cut short', async () => {
    const server = await raw((s) => s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab'));
    await expect(body(await plainHttpGet(new URL(server.url), options))).rejects.toThrow(/before the end of the chunked body/);
  });

  it('refuses a transfer-coding it cannot decode with DOWNLOAD_HTTP_ERROR', async () => {
    const server = await raw((s) => s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'));
    await expect(body(await plainHttpGet(new URL(server.url), options))).rejects.toMatchObject({ code: 'DOWNLOAD_HTTP_ERROR', message: expect.stringMatching(/only chunked/) as unknown });
  });

  it.each([
    ['something that is not HTTP', 'SSH-2.0-OpenSSH\r\n\r\n', /not an HTTP\/1.x response/],
    ['a malformed header', 'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n', /malformed response header/],
    ['a connection closed inside the head', 'HTTP/1.1 200 OK\r\nContent-Le', /before a complete response head/],
  ])('rejects %s', async (_name, wire, error) => {
    const server = await raw((s) => s.end(wire));
    await expect(plainHttpGet(new URL(server.url), options)).rejects.toThrow(error);
  });

  it('rejects conflicting Content-Length values', async () => {
    const server = await raw((s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'));
    await expect(body(await plainHttpGet(new URL(server.url), options))).rejects.toThrow(/invalid Content-Length/);
  });

  it('refuses header values that would inject lines', async () => {
    await expect(plainHttpGet(new URL('http://127.0.0.1:9/'), { ...options, headers: { authorization: 'x\r\nHost: evil' } })).rejects.toThrow(/invalid request header/);
  });

  it('fails a connection that goes quiet', async () => {
    const server = await raw((s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab'));
    const response = await plainHttpGet(new URL(server.url), { ...options, idleTimeoutMs: 200 });
    await expect(body(response)).rejects.toThrow(/no data for 200 ms/);
  });

  it('stops with the abort reason when cancelled in the middle of the body', async () => {
    const server = await raw((s) => s.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab'));
    const controller = new AbortController();
    const response = await plainHttpGet(new URL(server.url), { ...options, signal: controller.signal });
    const reading = body(response);
    setTimeout(() => controller.abort(new Error('cancelled by the operator')), 50);
    await expect(reading).rejects.toThrow('cancelled by the operator');
  });

  it('does not connect when already cancelled', async () => {
    const server = await raw((s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'));
    await expect(plainHttpGet(new URL(server.url), { ...options, signal: AbortSignal.abort(new Error('too late')) })).rejects.toThrow('too late');
  });

  it('rejects with the error the sink throws, and drops the connection', async () => {
    let closed = false;
    const server = await raw((s) => {
      s.on('close', () => (closed = true));
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc');
    });
    const response = await plainHttpGet(new URL(server.url), options);
    await expect(response.readBody(() => {
      throw new Error('disk on fire');
    })).rejects.toThrow('disk on fire');
    await expect.poll(() => closed).toBe(true);
  });

  it('reads nothing more while the sink\'s pause is pending, then goes on to the end', async () => {
    const payload = randomBytes(4 * 1024 * 1024);
    const server = await raw((s) => s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${payload.length}\r\n\r\n`), payload])));
    const response = await plainHttpGet(new URL(server.url), { ...options, readBufferBytes: 64 * 1024 });
    const parts: Buffer[] = [];
    let release: (() => void) | undefined;
    let chunksWhenPaused = 0;
    const reading = response.readBody((chunk) => {
      parts.push(Buffer.from(chunk));
      if (parts.length !== 2) return undefined;
      chunksWhenPaused = parts.length;
      return new Promise<void>((resolve) => (release = resolve));
    });
    await expect.poll(() => release).toBeDefined();
    // The server has sent everything; a client that ignored the pause would have read on by now.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(parts.length).toBe(chunksWhenPaused);
    release?.();
    await reading;
    expect(Buffer.concat(parts).equals(payload)).toBe(true);
  });

  it('fails the body with the error of a pause that rejects, and drops the connection', async () => {
    let closed = false;
    const server = await raw((s) => {
      s.on('close', () => (closed = true));
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc');
    });
    const response = await plainHttpGet(new URL(server.url), options);
    await expect(response.readBody(() => Promise.reject(new Error('write failed: EIO')))).rejects.toThrow('write failed: EIO');
    await expect.poll(() => closed).toBe(true);
  });

  it('fails to connect with the socket error', async () => {
    const server = await raw(() => undefined);
    const url = server.url;
    await server.close();
    await expect(plainHttpGet(new URL(url), options)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});
