import { createHash, randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import type { BuiltInEndpoint, CloudEvent } from './builtInEndpoint.ts';

// Pushes hub events to Event Grid webhook subscribers in the Event Grid schema, as IoT Hub's Event Grid
// integration does: DeviceCreated/DeviceDeleted (lifecycle), DeviceConnected/DeviceDisconnected and
// DeviceTelemetry. Each subscriber first gets the subscription-validation handshake. Delivery is one event
// per request, retried with exponential backoff, in order per device (devices proceed independently).
// Events that still fail after the last attempt are appended to a dead-letter file.

export interface EventGridEvent {
  id: string;
  topic: string;
  subject: string;
  eventType: string;
  eventTime: string;
  data: unknown;
  dataVersion: string;
  metadataVersion: string;
}

export interface EventGridOptions {
  hubName: string;
  webhooks: ReadonlyArray<string>;
  deadLetterFile: string;
  maxAttempts?: number;
  maxConcurrentDevices?: number;
  log?: (line: string) => void;
}

const retryDelaysMs = [100, 250, 500, 1000, 2000, 5000, 10_000, 30_000];

export function toEventGridEvent(hubName: string, event: CloudEvent): EventGridEvent | undefined {
  const topic = `/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/EMULATOR/PROVIDERS/MICROSOFT.DEVICES/IOTHUBS/${hubName.toUpperCase()}`;
  // A stable id per hub event, so a subscriber can drop redelivered duplicates.
  const digest = createHash('sha256').update(`${hubName}/${event.sequence}`).digest('hex');
  const id = `${digest.slice(0, 8)}-${digest.slice(8, 12)}-${digest.slice(12, 16)}-${digest.slice(16, 20)}-${digest.slice(20, 32)}`;
  const base = { id, topic, subject: `devices/${event.deviceId}`, eventTime: event.enqueuedTime, dataVersion: '', metadataVersion: '1' };
  const opType = event.properties.opType;
  if (event.source === 'deviceLifecycleEvents') {
    if (event.moduleId) return undefined;
    const eventType = opType === 'createDeviceIdentity' ? 'Microsoft.Devices.DeviceCreated' : opType === 'deleteDeviceIdentity' ? 'Microsoft.Devices.DeviceDeleted' : undefined;
    if (!eventType) return undefined;
    return { ...base, eventType, data: { twin: JSON.parse(event.body.toString('utf8')) as unknown, hubName, deviceId: event.deviceId } };
  }
  if (event.source === 'deviceConnectionStateEvents') {
    const eventType = opType === 'deviceConnected' ? 'Microsoft.Devices.DeviceConnected' : 'Microsoft.Devices.DeviceDisconnected';
    const info = JSON.parse(event.body.toString('utf8')) as { sequenceNumber: string };
    return {
      ...base,
      eventType,
      data: { deviceConnectionStateEventInfo: { sequenceNumber: info.sequenceNumber }, hubName, deviceId: event.deviceId, moduleId: event.moduleId ?? '' },
    };
  }
  const systemProperties: Record<string, string> = {};
  for (const [key, value] of Object.entries(event.systemProperties)) {
    systemProperties[key.startsWith('iothub-') ? key : `iothub-${key}`] = value;
  }
  // Event Grid inlines a JSON body only for content-type application/json with UTF-8 encoding; else base64.
  const isJson = /^application\/json/i.test(event.systemProperties['content-type'] ?? '') && /^utf-?8$/i.test(event.systemProperties['content-encoding'] ?? '');
  let body: unknown = event.body.toString('base64');
  if (isJson) {
    try {
      body = JSON.parse(event.body.toString('utf8'));
    } catch {
      body = event.body.toString('base64');
    }
  }
  return { ...base, eventType: 'Microsoft.Devices.DeviceTelemetry', data: { properties: event.properties, systemProperties, body } };
}

type ResolvedOptions = Required<EventGridOptions>;

class WebhookSubscriber {
  readonly #url: string;
  readonly #options: ResolvedOptions;
  readonly #queues = new Map<string, EventGridEvent[]>();
  readonly #active = new Set<string>();
  #validated: Promise<void>;
  #stopped = false;
  readonly #timers = new Set<NodeJS.Timeout>();

  constructor(url: string, options: ResolvedOptions) {
    this.#url = url;
    this.#options = options;
    this.#validated = this.#handshake();
  }

  enqueue(deviceId: string, event: EventGridEvent): void {
    const queue = this.#queues.get(deviceId) ?? [];
    queue.push(event);
    this.#queues.set(deviceId, queue);
    this.#schedule();
  }

  stop(): void {
    this.#stopped = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        resolve();
      }, ms);
      this.#timers.add(timer);
    });
  }

  async #handshake(): Promise<void> {
    const validationCode = randomUUID();
    const event: EventGridEvent = {
      id: randomUUID(),
      topic: '',
      subject: '',
      eventType: 'Microsoft.EventGrid.SubscriptionValidationEvent',
      eventTime: new Date().toISOString(),
      data: { validationCode, validationUrl: `${this.#url}?validation=unsupported-in-emulator` },
      dataVersion: '2',
      metadataVersion: '1',
    };
    for (let attempt = 0; !this.#stopped; attempt += 1) {
      try {
        const response = await fetch(this.#url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'aeg-event-type': 'SubscriptionValidation' },
          body: JSON.stringify([event]),
          signal: AbortSignal.timeout(30_000),
        });
        const reply = (await response.json().catch(() => undefined)) as { validationResponse?: unknown } | undefined;
        if (response.ok && reply?.validationResponse === validationCode) {
          this.#options.log(`event grid: ${this.#url} validated`);
          return;
        }
        this.#options.log(`event grid: ${this.#url} failed validation (HTTP ${response.status})`);
      } catch (error) {
        this.#options.log(`event grid: ${this.#url} validation error: ${(error as Error).message}`);
      }
      await this.#sleep(retryDelaysMs[Math.min(attempt, retryDelaysMs.length - 1)] ?? 30_000);
    }
  }

  #schedule(): void {
    for (const deviceId of this.#queues.keys()) {
      if (this.#active.size >= this.#options.maxConcurrentDevices) return;
      if (this.#active.has(deviceId)) continue;
      this.#active.add(deviceId);
      void this.#drain(deviceId).finally(() => {
        this.#active.delete(deviceId);
        if (this.#queues.size > 0) this.#schedule();
      });
    }
  }

  async #drain(deviceId: string): Promise<void> {
    await this.#validated;
    const queue = this.#queues.get(deviceId);
    while (queue && queue.length > 0 && !this.#stopped) {
      const event = queue[0] as EventGridEvent;
      await this.#deliver(event);
      queue.shift();
    }
    if (queue?.length === 0) this.#queues.delete(deviceId);
  }

  async #deliver(event: EventGridEvent): Promise<void> {
    for (let attempt = 1; !this.#stopped; attempt += 1) {
      try {
        const response = await fetch(this.#url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'aeg-event-type': 'Notification', 'aeg-delivery-count': String(attempt - 1) },
          body: JSON.stringify([event]),
          signal: AbortSignal.timeout(30_000),
        });
        await response.arrayBuffer().catch(() => undefined);
        if (response.ok) return;
        // Like Event Grid, these statuses are final: no retry.
        if ([400, 401, 403, 413].includes(response.status)) {
          this.#deadLetter(event, `HTTP ${response.status}`);
          return;
        }
      } catch (error) {
        if (attempt === 1) this.#options.log(`event grid: delivery to ${this.#url} failed: ${(error as Error).message}; retrying`);
      }
      if (attempt >= this.#options.maxAttempts) {
        this.#deadLetter(event, `no success after ${attempt} attempts`);
        return;
      }
      await this.#sleep(retryDelaysMs[Math.min(attempt - 1, retryDelaysMs.length - 1)] ?? 30_000);
    }
  }

  #deadLetter(event: EventGridEvent, reason: string): void {
    this.#options.log(`event grid: dead-lettered ${event.eventType} ${event.id} for ${this.#url}: ${reason}`);
    appendFileSync(this.#options.deadLetterFile, `${JSON.stringify({ url: this.#url, reason, event })}\n`);
  }
}

export class EventGridPublisher {
  readonly #subscribers: WebhookSubscriber[];
  readonly #hubName: string;
  readonly #onEvent: (event: CloudEvent) => void;
  readonly #endpoint: BuiltInEndpoint;

  constructor(endpoint: BuiltInEndpoint, options: EventGridOptions) {
    this.#hubName = options.hubName;
    this.#endpoint = endpoint;
    const resolved: ResolvedOptions = {
      ...options,
      maxAttempts: options.maxAttempts ?? 30,
      maxConcurrentDevices: options.maxConcurrentDevices ?? 32,
      log: options.log ?? (() => undefined),
    };
    this.#subscribers = options.webhooks.map((url) => new WebhookSubscriber(url, resolved));
    this.#onEvent = (event) => {
      const gridEvent = toEventGridEvent(this.#hubName, event);
      if (!gridEvent) return;
      for (const subscriber of this.#subscribers) subscriber.enqueue(event.deviceId, gridEvent);
    };
    if (this.#subscribers.length > 0) endpoint.on('event', this.#onEvent);
  }

  stop(): void {
    this.#endpoint.off('event', this.#onEvent);
    for (const subscriber of this.#subscribers) subscriber.stop();
  }
}
