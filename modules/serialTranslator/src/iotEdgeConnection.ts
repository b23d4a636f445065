import { request } from 'node:http';
import iotDevice from 'azure-iot-device';
import iotDeviceMqtt from 'azure-iot-device-mqtt';
import type { McuFlashProgress } from '@edge-ota/common';
import { MCU_PROGRESS_OUTPUT } from '@edge-ota/common';

const { ModuleClient, Client: DeviceClient, Message } = iotDevice;
const { Mqtt } = iotDeviceMqtt;

type Twin = Awaited<ReturnType<InstanceType<typeof ModuleClient>['getTwin']>>;

// The translator's links to IoT Hub: its own module client (ModuleClient.fromEnvironment, exactly what
// aziot-edged provides) and one device client per MCU, connected through this gateway with the MCU identity's
// key and the workload API's trust bundle. The rest of the module sees only these narrow interfaces.

export interface MethodReply {
  status: number;
  payload: unknown;
}

export interface McuDeviceConnection {
  /** The full desired document once, then after each patch. */
  onDesired(handler: (desired: Record<string, unknown>) => void): void;
  reportProperties(patch: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

export interface TranslatorConnection {
  readonly deviceId: string;
  readonly moduleId: string;
  onMethod(name: string, handler: (payload: unknown) => Promise<MethodReply>): void;
  onDesired(handler: (desired: Record<string, unknown>) => void): void;
  sendProgress(progress: McuFlashProgress): Promise<void>;
  reportProperties(patch: Record<string, unknown>): Promise<void>;
  openMcuDevice(connectionString: string): Promise<McuDeviceConnection>;
  close(): Promise<void>;
}

export async function connectToEdgeHub(log: (line: string) => void): Promise<TranslatorConnection> {
  const client = await ModuleClient.fromEnvironment(Mqtt);
  client.on('error', (error: Error) => log(`edgeHub connection error: ${error.message}`));
  await client.open();
  const twin = await client.getTwin();
  // Read once: the MCU device clients must trust the same edgeHub certificate the module client does.
  const trustBundle = await fetchTrustBundle(process.env.IOTEDGE_WORKLOADURI ?? '', process.env.IOTEDGE_APIVERSION ?? '2019-01-30');
  return {
    deviceId: process.env.IOTEDGE_DEVICEID ?? '',
    moduleId: process.env.IOTEDGE_MODULEID ?? '',
    onMethod(name, handler) {
      client.onMethod(name, (req, response) => {
        handler(req?.payload).then(
          (reply) => response?.send(reply.status, reply.payload).catch((error: Error) => log(`method ${name}: reply not sent: ${error.message}`)),
          (error: unknown) => response?.send(500, { error: (error as Error).message }).catch(() => undefined),
        );
      });
    },
    onDesired(handler) {
      twin.on('properties.desired', () => handler(twin.properties.desired as Record<string, unknown>));
    },
    async sendProgress(progress) {
      const message = new Message(JSON.stringify(progress));
      message.contentType = 'application/json';
      message.contentEncoding = 'utf-8';
      await client.sendOutputEvent(MCU_PROGRESS_OUTPUT, message);
    },
    reportProperties: (patch) => reportOn(twin, patch),
    async openMcuDevice(connectionString) {
      const device = DeviceClient.fromConnectionString(connectionString, Mqtt);
      device.on('error', (error: Error) => log(`MCU identity connection error: ${error.message}`));
      await device.setOptions({ ca: trustBundle });
      try {
        await device.open();
        const deviceTwin = await device.getTwin();
        return {
          onDesired(handler) {
            deviceTwin.on('properties.desired', () => handler(deviceTwin.properties.desired as Record<string, unknown>));
          },
          reportProperties: (patch) => reportOn(deviceTwin, patch),
          async close() {
            await device.close();
          },
        };
      } catch (error) {
        await device.close().catch(() => undefined);
        throw error;
      }
    },
    async close() {
      await client.close();
    },
  };
}

function reportOn(twin: Twin, patch: Record<string, unknown>): Promise<void> {
  const reported = twin.properties.reported as { update: (p: unknown, done: (error?: Error) => void) => void };
  return new Promise((resolve, reject) => reported.update(patch, (error) => (error ? reject(error) : resolve())));
}

/** GET /trust-bundle from the workload API (a unix socket under aziot-edged). */
function fetchTrustBundle(workloadUri: string, apiVersion: string): Promise<string> {
  const url = new URL(workloadUri);
  const target = url.protocol === 'unix:' ? { socketPath: url.pathname } : { host: url.hostname, port: Number(url.port) };
  return new Promise((resolve, reject) => {
    const req = request({ ...target, method: 'GET', path: `/trust-bundle?api-version=${encodeURIComponent(apiVersion)}` }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        try {
          if (res.statusCode !== 200) throw new Error(`workload API trust-bundle answered HTTP ${res.statusCode}`);
          resolve((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { certificate: string }).certificate);
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}
