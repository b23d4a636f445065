import { createHmac } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import path from 'node:path';
import type { RegistryStore } from './registryStore.ts';

// The IoT Edge workload API (api-version 2018-06-28+) for one edge device, on a unix socket as aziot-edged
// serves it: `sign` HMACs data with the module's key (modules never see their keys) and `trust-bundle`
// returns the CA that the edgeHub's server certificate chains to. Unlike aziot-edged, the emulator does not
// check which process is calling.

const maxSocketPath = 107;

export function workloadSocketPath(socketDir: string, deviceId: string): string {
  const file = path.join(socketDir, `${encodeURIComponent(deviceId)}.sock`);
  if (Buffer.byteLength(file) > maxSocketPath) {
    throw new Error(`workload socket path ${file} is longer than ${maxSocketPath} bytes; use a shorter --state-dir`);
  }
  return file;
}

export class WorkloadApi {
  readonly #store: RegistryStore;
  readonly #socketDir: string;
  readonly #trustBundle: string;
  readonly #servers = new Map<string, Server>();

  constructor(store: RegistryStore, socketDir: string, trustBundlePem: string) {
    this.#store = store;
    this.#socketDir = socketDir;
    this.#trustBundle = trustBundlePem;
    mkdirSync(socketDir, { recursive: true, mode: 0o755 });
  }

  /** Makes sure every edge device in the registry has its socket, and no deleted one keeps one. */
  async sync(): Promise<void> {
    const edgeDevices = new Set(this.#store.listDevices().filter((d) => d.capabilities?.iotEdge).map((d) => d.deviceId));
    for (const deviceId of edgeDevices) if (!this.#servers.has(deviceId)) await this.#listen(deviceId);
    for (const deviceId of [...this.#servers.keys()]) if (!edgeDevices.has(deviceId)) await this.#stop(deviceId);
  }

  async close(): Promise<void> {
    for (const deviceId of [...this.#servers.keys()]) await this.#stop(deviceId);
  }

  async #listen(deviceId: string): Promise<void> {
    const socket = workloadSocketPath(this.#socketDir, deviceId);
    rmSync(socket, { force: true });
    const server = createServer((req, res) => this.#handle(deviceId, req, res));
    this.#servers.set(deviceId, server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socket, () => resolve());
    });
  }

  async #stop(deviceId: string): Promise<void> {
    const server = this.#servers.get(deviceId);
    this.#servers.delete(deviceId);
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(workloadSocketPath(this.#socketDir, deviceId), { force: true });
  }

  #handle(deviceId: string, req: IncomingMessage, res: ServerResponse): void {
    const reply = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
    };
    const url = new URL(req.url ?? '/', 'http://workload');
    if (!url.searchParams.get('api-version')) {
      reply(400, { message: 'api-version query parameter is required' });
      return;
    }
    if (req.method === 'GET' && url.pathname === '/trust-bundle') {
      reply(200, { certificate: this.#trustBundle });
      return;
    }
    const sign = /^\/modules\/([^/]+)\/genid\/([^/]+)\/sign$/.exec(url.pathname);
    if (req.method !== 'POST' || !sign) {
      reply(404, { message: `no workload API resource ${req.method ?? ''} ${url.pathname}` });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= 64 * 1024) chunks.push(chunk);
    });
    req.on('end', () => {
      if (size > 64 * 1024) return reply(413, { message: 'sign request too large' });
      const moduleId = decodeURIComponent(sign[1] ?? '');
      const generationId = decodeURIComponent(sign[2] ?? '');
      const module = this.#store.getIdentity({ deviceId, moduleId });
      if (!module) return reply(404, { message: `module ${moduleId} not found on ${deviceId}` });
      if (module.generationId !== generationId) return reply(404, { message: `module ${moduleId} has no generation ${generationId}` });
      let request: { keyId?: unknown; algo?: unknown; data?: unknown };
      try {
        request = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof request;
      } catch {
        return reply(400, { message: 'sign request is not JSON' });
      }
      if (request.algo !== 'HMACSHA256' || typeof request.data !== 'string' || (request.keyId !== 'primary' && request.keyId !== 'secondary')) {
        return reply(400, { message: 'sign request needs keyId primary|secondary, algo HMACSHA256 and base64 data' });
      }
      const keys = module.authentication.symmetricKey;
      const key = request.keyId === 'primary' ? keys.primaryKey : keys.secondaryKey;
      const digest = createHmac('sha256', Buffer.from(key, 'base64')).update(Buffer.from(request.data, 'base64')).digest('base64');
      reply(200, { digest });
    });
  }
}
