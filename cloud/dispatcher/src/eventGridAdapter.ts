import { DispatcherError } from './errors.ts';
import type { EventIngestion, HubEvent, IngestResult } from './eventIngestion.ts';

// IoT Hub's Event Grid integration as a webhook: the subscription-validation handshake, then
// Microsoft.Devices.DeviceCreated / DeviceDeleted / DeviceConnected / DeviceTelemetry events (Event Grid
// schema, an array per request). Event Grid does not retry 400, so malformed or refused events get 400 with a
// stable code; anything the dispatcher could not store gets 5xx, which Event Grid retries.

export interface WebhookAnswer {
  status: number;
  body: unknown;
}

interface EventGridEvent {
  id: string;
  eventType: string;
  subject?: string;
  eventTime: string;
  data: Record<string, unknown>;
}

const LIFECYCLE: Record<string, string> = {
  'Microsoft.Devices.DeviceCreated': 'createDeviceIdentity',
  'Microsoft.Devices.DeviceDeleted': 'deleteDeviceIdentity',
};

function isEvent(value: unknown): value is EventGridEvent {
  const e = value as Partial<EventGridEvent> | null;
  return typeof e === 'object' && e !== null && typeof e.id === 'string' && typeof e.eventType === 'string' && typeof e.eventTime === 'string'
    && typeof e.data === 'object' && e.data !== null && !Array.isArray(e.data);
}

/** Maps an Event Grid event to the core's vocabulary; undefined for event types the dispatcher does not read. */
export function hubEventFromEventGrid(event: EventGridEvent): HubEvent | undefined {
  const data = event.data;
  const subjectDevice = /^devices\/([^/]+)/.exec(event.subject ?? '')?.[1];
  const opType = LIFECYCLE[event.eventType];
  if (opType) {
    const deviceId = typeof data.deviceId === 'string' ? data.deviceId : subjectDevice ?? '';
    return { kind: 'lifecycle', deviceId, moduleId: undefined, opType, enqueuedTime: event.eventTime, twin: data.twin };
  }
  if (event.eventType === 'Microsoft.Devices.DeviceConnected' || event.eventType === 'Microsoft.Devices.DeviceDisconnected') {
    const moduleId = typeof data.moduleId === 'string' && data.moduleId ? data.moduleId : undefined;
    return { kind: 'connection', deviceId: typeof data.deviceId === 'string' ? data.deviceId : subjectDevice ?? '', moduleId, enqueuedTime: event.eventTime, connected: event.eventType.endsWith('Connected') && !event.eventType.endsWith('Disconnected') };
  }
  if (event.eventType === 'Microsoft.Devices.DeviceTelemetry') {
    const system = (typeof data.systemProperties === 'object' && data.systemProperties !== null ? data.systemProperties : {}) as Record<string, unknown>;
    const properties = (typeof data.properties === 'object' && data.properties !== null ? data.properties : {}) as Record<string, unknown>;
    // Event Grid inlines a JSON body as JSON and base64-encodes anything else.
    const body = typeof data.body === 'string' ? Buffer.from(data.body, 'base64') : Buffer.from(JSON.stringify(data.body ?? null));
    const moduleId = typeof system['iothub-connection-module-id'] === 'string' ? system['iothub-connection-module-id'] : undefined;
    const enqueued = typeof system['iothub-enqueuedtime'] === 'string' ? system['iothub-enqueuedtime'] : event.eventTime;
    const sender = system['iothub-connection-device-id'];
    return { kind: 'telemetry', deviceId: typeof sender === 'string' ? sender : subjectDevice ?? '', moduleId, enqueuedTime: enqueued, properties, body };
  }
  return undefined;
}

export class EventGridAdapter {
  readonly #ingestion: EventIngestion;

  constructor(ingestion: EventIngestion) {
    this.#ingestion = ingestion;
  }

  async handle(headers: Readonly<Record<string, string | string[] | undefined>>, body: unknown): Promise<WebhookAnswer> {
    if (!Array.isArray(body)) throw new DispatcherError('EVENT_INVALID', 'an Event Grid delivery is a JSON array of events');
    if (headers['aeg-event-type'] === 'SubscriptionValidation') {
      const first: unknown = body[0];
      const code = isEvent(first) ? first.data.validationCode : undefined;
      if (typeof code !== 'string') throw new DispatcherError('EVENT_INVALID', 'subscription validation without data.validationCode');
      return { status: 200, body: { validationResponse: code } };
    }
    const results: IngestResult[] = [];
    for (const item of body) {
      if (!isEvent(item)) {
        results.push({ result: 'rejected', code: 'EVENT_INVALID', detail: 'an event needs id, eventType, eventTime and a data object' });
        continue;
      }
      const event = hubEventFromEventGrid(item);
      results.push(event ? await this.#ingestion.ingest(event) : { result: 'ignored', detail: item.eventType });
    }
    const refused = results.find((r): r is Extract<IngestResult, { result: 'rejected' }> => r.result === 'rejected');
    if (refused) {
      if (refused.code === 'EVENT_FAILED') return { status: 500, body: { error: { code: 'EVENT_FAILED', message: refused.detail } } };
      return { status: 400, body: { error: { code: refused.code, message: refused.detail }, results } };
    }
    return { status: 200, body: { results } };
  }
}
