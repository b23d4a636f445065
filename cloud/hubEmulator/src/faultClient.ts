import { request } from 'node:https';
import type { HubInfo } from './app.ts';
import { createSasToken } from './sharedAccessSignature.ts';

// Client for the emulator's fault-injection endpoints (its only API beyond IoT Hub's own).

export class HubFaults {
  readonly #info: HubInfo;
  readonly #ca: string | undefined;

  constructor(info: HubInfo, caPem?: string) {
    this.#info = info;
    this.#ca = caPem;
  }

  /** Closes the MQTT connection of a device or module, as a network drop would. */
  async dropConnection(deviceId: string, moduleId?: string): Promise<boolean> {
    const reply = (await this.#post('/emulator/faults/drop-connection', { deviceId, moduleId })) as { dropped: boolean };
    return reply.dropped;
  }

  /** Cuts (false) or restores (true) an edge device's link to its parent or the cloud. */
  async setUpstream(deviceId: string, connected: boolean): Promise<void> {
    await this.#post('/emulator/faults/upstream', { deviceId, connected });
  }

  #post(pathName: string, body: unknown): Promise<unknown> {
    const fields = new Map(this.#info.serviceConnectionString.split(';').map((kv) => {
      const eq = kv.indexOf('=');
      return [kv.slice(0, eq), kv.slice(eq + 1)] as const;
    }));
    const token = createSasToken(this.#info.hostName, fields.get('SharedAccessKey') ?? '', Math.floor(Date.now() / 1000) + 3600,
      fields.get('SharedAccessKeyName'));
    const text = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: this.#info.address,
          port: this.#info.httpsPort,
          path: pathName,
          method: 'POST',
          ca: this.#ca,
          headers: { authorization: token, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
        },
        (res) => {
          let data = '';
          res.on('data', (chunk: Buffer) => (data += chunk.toString()));
          res.on('end', () => {
            if ((res.statusCode ?? 500) >= 300) reject(new Error(`fault injection ${pathName} failed: HTTP ${res.statusCode}: ${data}`));
            else resolve(data ? (JSON.parse(data) as unknown) : undefined);
          });
        },
      );
      req.on('error', reject);
      req.end(text);
    });
  }
}
