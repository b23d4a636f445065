import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

// Serves /files/<name> over loopback with Range support, and misbehaves on request: cut the body short, send
// extra bytes, flip a byte, answer 503, or go slowly so a test can interrupt a download.

export type Misbehaviour = 'truncate' | 'overlong' | 'corrupt' | 'unavailable';

export interface ArtifactServer {
  readonly baseUrl: string;
  readonly requests: Array<{ path: string; range: string | undefined }>;
  put(name: string, data: Buffer): void;
  /** The next `times` responses for `name` misbehave. */
  misbehave(name: string, how: Misbehaviour, times?: number): void;
  /** Bytes per 10 ms for every response (0 = unthrottled). */
  throttle(bytesPer10Ms: number): void;
  close(): Promise<void>;
}

export async function startArtifactServer(): Promise<ArtifactServer> {
  const files = new Map<string, Buffer>();
  const faults = new Map<string, { how: Misbehaviour; times: number }>();
  const requests: ArtifactServer['requests'] = [];
  let rate = 0;
  const server = createServer((req, res) => {
    const name = decodeURIComponent((req.url ?? '').replace(/^\/files\//, '').split('?')[0] ?? '');
    requests.push({ path: req.url ?? '', range: req.headers.range });
    const data = files.get(name);
    if (!data) {
      res.writeHead(404).end();
      return;
    }
    const fault = faults.get(name);
    let how: Misbehaviour | undefined;
    if (fault && fault.times > 0) {
      fault.times -= 1;
      how = fault.how;
    }
    if (how === 'unavailable') {
      res.writeHead(503).end();
      return;
    }
    let start = 0;
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (range) start = Number(range[1]);
    if (start >= data.length) {
      res.writeHead(416, { 'content-range': `bytes */${data.length}` }).end();
      return;
    }
    let body = data.subarray(start);
    if (how === 'corrupt') {
      body = Buffer.from(body);
      const middle = Math.floor(body.length / 2);
      body[middle] = (body[middle] ?? 0) ^ 0xff;
    }
    if (how === 'overlong') body = Buffer.concat([body, Buffer.alloc(1024, 7)]);
    const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
    if (how !== 'overlong') headers['content-length'] = body.length;
    if (range) {
      res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` });
    } else {
      res.writeHead(200, headers);
    }
    const cutAt = how === 'truncate' ? Math.floor(body.length / 2) : body.length;
    const send = body.subarray(0, cutAt);
    if (rate === 0) {
      // Cut only after the half has left, so the client really holds a partial body.
      if (how === 'truncate') res.write(send, () => setTimeout(() => res.destroy(), 20));
      else res.end(send);
      return;
    }
    let offset = 0;
    const timer = setInterval(() => {
      if (res.destroyed) {
        clearInterval(timer);
        return;
      }
      res.write(send.subarray(offset, offset + rate));
      offset += rate;
      if (offset >= send.length) {
        clearInterval(timer);
        if (how === 'truncate') res.destroy();
        else res.end();
      }
    }, 10);
    res.on('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    requests,
    put: (name, data) => files.set(name, data),
    misbehave: (name, how, times = 1) => faults.set(name, { how, times }),
    throttle: (bytes) => {
      rate = bytes;
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
