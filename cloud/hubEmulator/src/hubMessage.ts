// One device-to-cloud (or module-to-module) message as it moves through the emulator.

export interface HubMessage {
  readonly body: Buffer;
  /** Application properties (the property bag the SDK's `message.properties` carries). */
  readonly properties: Readonly<Record<string, string>>;
  readonly messageId?: string | undefined;
  readonly correlationId?: string | undefined;
  readonly contentType?: string | undefined;
  readonly contentEncoding?: string | undefined;
  readonly userId?: string | undefined;
  readonly connectionDeviceId: string;
  readonly connectionModuleId?: string | undefined;
  /** The module output it was sent on (`sendOutputEvent`), if any. */
  readonly outputName?: string | undefined;
  readonly enqueuedTime: string;
}

/** IoT Hub's D2C limit, counting the body and the application properties. */
export const maxTelemetryBytes = 256 * 1024;

export function messageSize(message: Pick<HubMessage, 'body' | 'properties'>): number {
  let size = message.body.length;
  for (const [key, value] of Object.entries(message.properties)) size += Buffer.byteLength(key) + Buffer.byteLength(value);
  return size;
}
