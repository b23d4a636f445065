import iotDevice from 'azure-iot-device';
import iotDeviceMqtt from 'azure-iot-device-mqtt';
import type { FeedbackMessage } from '@edge-ota/common';
import { FEEDBACK_MESSAGE_PROPERTY, FEEDBACK_OUTPUT } from '@edge-ota/common';

const { ModuleClient, Message } = iotDevice;
const { Mqtt } = iotDeviceMqtt;

type Client = InstanceType<typeof ModuleClient>;
type Twin = Awaited<ReturnType<Client['getTwin']>>;

// The module's one link to its edgeHub, through ModuleClient.fromEnvironment(Mqtt) only (exactly what
// aziot-edged provides). Everything else in the orchestrator sees this narrow interface, so the engine can be
// tested without a hub and the module runs unchanged against Azure or the local emulator.

export interface MethodReply {
  status: number;
  payload: unknown;
}

export interface EdgeConnection {
  readonly deviceId: string;
  readonly moduleId: string;
  onMethod(name: string, handler: (payload: unknown) => Promise<MethodReply>): void;
  onDesired(handler: (desired: Record<string, unknown>) => void): void;
  onInput(inputName: string, handler: (body: Buffer) => void): void;
  sendFeedback(message: FeedbackMessage): Promise<void>;
  reportProperties(patch: Record<string, unknown>): Promise<void>;
  invokeModuleMethod(deviceId: string, moduleId: string, methodName: string, payload: unknown, timeoutSeconds?: number): Promise<MethodReply>;
  close(): Promise<void>;
}

export async function connectToEdgeHub(log: (line: string) => void): Promise<EdgeConnection> {
  const client = await ModuleClient.fromEnvironment(Mqtt);
  client.on('error', (error: Error) => log(`edgeHub connection error: ${error.message}`));
  const inputHandlers = new Map<string, (body: Buffer) => void>();
  client.on('inputMessage', (inputName: string, message: InstanceType<typeof Message>) => {
    const handler = inputHandlers.get(inputName);
    try {
      handler?.(message.getData() as Buffer);
    } finally {
      void client.complete(message).catch(() => undefined);
    }
  });
  await client.open();
  const twin: Twin = await client.getTwin();
  const deviceId = process.env.IOTEDGE_DEVICEID ?? '';
  const moduleId = process.env.IOTEDGE_MODULEID ?? '';
  return {
    deviceId,
    moduleId,
    onMethod(name, handler) {
      client.onMethod(name, (request, response) => {
        handler(request?.payload).then(
          (reply) => response?.send(reply.status, reply.payload).catch((error: Error) => log(`method ${name}: reply not sent: ${error.message}`)),
          (error: unknown) => response?.send(500, { error: (error as Error).message }).catch(() => undefined),
        );
      });
    },
    onDesired(handler) {
      // The SDK emits the full desired document once, then each patch.
      twin.on('properties.desired', () => handler(twin.properties.desired as Record<string, unknown>));
    },
    onInput(inputName, handler) {
      inputHandlers.set(inputName, handler);
    },
    async sendFeedback(feedback) {
      const message = new Message(JSON.stringify(feedback));
      message.contentType = 'application/json';
      message.contentEncoding = 'utf-8';
      message.messageId = feedback.messageId;
      message.properties.add(FEEDBACK_MESSAGE_PROPERTY, 'feedback');
      await client.sendOutputEvent(FEEDBACK_OUTPUT, message);
    },
    reportProperties(patch) {
      const reported = twin.properties.reported as { update: (p: unknown, done: (error?: Error) => void) => void };
      return new Promise((resolve, reject) => reported.update(patch, (error) => (error ? reject(error) : resolve())));
    },
    async invokeModuleMethod(targetDevice, targetModule, methodName, payload, timeoutSeconds = 30) {
      const result = (await client.invokeMethod(targetDevice, targetModule, {
        methodName,
        payload,
        responseTimeoutInSeconds: timeoutSeconds,
        connectTimeoutInSeconds: 0,
      }));
      return result;
    },
    async close() {
      await client.close();
    },
  };
}
