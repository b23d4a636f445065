import type { DeploymentPlanner } from './deploymentPlanner.ts';
import type { DispatchQueue } from './dispatchQueue.ts';
import type { FeedbackIngestor } from './feedbackIngestor.ts';
import { isFeedbackTelemetry } from './feedbackIngestor.ts';
import { gatewayOfScope } from './hubClient.ts';
import type { DispatcherStore } from './store.ts';

// The one core both adapters (Event Hubs consumer, Event Grid webhook) feed. Events may repeat and arrive out
// of order: an event is identified by what it is (operation, device, enqueued time; a feedback message by its
// id), so the same hub event through either adapter counts once, and lifecycle events are ordered by their
// enqueued time, so a delete that overtakes its create wins and cancels the pending work.

export type HubEvent =
  | { kind: 'lifecycle'; deviceId: string; moduleId: string | undefined; opType: string; enqueuedTime: string; twin: unknown }
  | { kind: 'telemetry'; deviceId: string; moduleId: string | undefined; enqueuedTime: string; properties: Readonly<Record<string, unknown>>; body: Buffer }
  | { kind: 'connection'; deviceId: string; moduleId: string | undefined; enqueuedTime: string; connected: boolean };

export type IngestResult =
  | { result: 'applied' | 'duplicate' | 'stale' | 'ignored'; detail?: string }
  | { result: 'rejected'; code: string; detail: string };

export interface IngestionCounters {
  applied: number;
  duplicate: number;
  stale: number;
  ignored: number;
  rejected: Record<string, number>;
}

interface TwinShape {
  capabilities?: { iotEdge?: unknown };
  deviceScope?: unknown;
  parentScopes?: unknown;
  tags?: { group?: unknown } & Record<string, unknown>;
}

export class EventIngestion {
  readonly #store: DispatcherStore;
  readonly #planner: DeploymentPlanner;
  readonly #feedback: FeedbackIngestor;
  readonly #queue: DispatchQueue;
  readonly #log: (line: string) => void;
  readonly counters: IngestionCounters = { applied: 0, duplicate: 0, stale: 0, ignored: 0, rejected: {} };

  constructor(options: { store: DispatcherStore; planner: DeploymentPlanner; feedback: FeedbackIngestor; queue: DispatchQueue; log?: (line: string) => void }) {
    this.#store = options.store;
    this.#planner = options.planner;
    this.#feedback = options.feedback;
    this.#queue = options.queue;
    this.#log = options.log ?? (() => undefined);
  }

  async ingest(event: HubEvent): Promise<IngestResult> {
    let outcome: IngestResult;
    try {
      outcome = await this.#ingest(event);
    } catch (error) {
      // Never let one event stop the stream; it is counted and logged with its device.
      outcome = { result: 'rejected', code: 'EVENT_FAILED', detail: (error as Error).message };
    }
    if (outcome.result === 'rejected') {
      this.counters.rejected[outcome.code] = (this.counters.rejected[outcome.code] ?? 0) + 1;
      this.#log(`event ${event.kind} from ${event.deviceId}: ${outcome.code} ${outcome.detail}`);
    } else {
      this.counters[outcome.result] += 1;
    }
    return outcome;
  }

  async #ingest(event: HubEvent): Promise<IngestResult> {
    if (typeof event.deviceId !== 'string' || event.deviceId.length === 0 || Number.isNaN(Date.parse(event.enqueuedTime))) {
      return { result: 'rejected', code: 'EVENT_INVALID', detail: 'an event needs a device id and an enqueued time' };
    }
    switch (event.kind) {
      case 'lifecycle':
        return this.#lifecycle(event);
      case 'telemetry':
        return this.#telemetry(event);
      case 'connection':
        if (event.connected) this.#gatewayAlive(event.deviceId);
        return { result: 'applied' };
    }
  }

  async #lifecycle(event: Extract<HubEvent, { kind: 'lifecycle' }>): Promise<IngestResult> {
    if (event.moduleId) return { result: 'ignored', detail: 'module lifecycle' };
    if (event.opType !== 'createDeviceIdentity' && event.opType !== 'deleteDeviceIdentity') return { result: 'ignored', detail: event.opType };
    const eventId = `lifecycle:${event.opType}:${event.deviceId}:${new Date(event.enqueuedTime).toISOString()}`;
    if (this.#store.isEventSeen(eventId)) return { result: 'duplicate' };
    let result: IngestResult;
    if (event.opType === 'createDeviceIdentity') {
      this.#registerDiscovered(event.deviceId, event.twin);
      if (!this.#store.applyLifecycle(event.deviceId, 'live', event.enqueuedTime)) {
        result = { result: 'stale', detail: 'a later lifecycle event (a delete) was applied already' };
      } else {
        this.#history(event.deviceId, 'created', event.enqueuedTime);
        const plan = await this.#planner.plan(event.deviceId);
        result = { result: 'applied', detail: plan.planned ? `job ${plan.jobId} to ${plan.gatewayId}` : plan.reason };
      }
    } else {
      // A delete seen before its create leaves a tombstone, so the create that arrives later is stale.
      this.#registerDiscovered(event.deviceId, event.twin);
      if (!this.#store.applyLifecycle(event.deviceId, 'deleted', event.enqueuedTime)) {
        result = { result: 'stale' };
      } else {
        const cancelled = this.#store.cancelPending(event.deviceId, 'device deleted');
        for (const job of cancelled.filter((j) => j.twinWritten)) await this.#queue.cancelTwin({ ...job, deviceId: event.deviceId });
        this.#history(event.deviceId, 'deleted', event.enqueuedTime);
        result = { result: 'applied', detail: cancelled.length ? `cancelled ${cancelled.map((j) => j.jobId).join(', ')}` : undefined };
      }
    }
    // Marked after the work: a crash in between replays the event, and the work is idempotent.
    this.#store.markEventSeen(eventId, event.enqueuedTime);
    return result;
  }

  #telemetry(event: Extract<HubEvent, { kind: 'telemetry' }>): IngestResult {
    if (!isFeedbackTelemetry(event.properties)) return { result: 'ignored', detail: 'not edge-ota feedback' };
    const outcome = this.#feedback.ingest({ deviceId: event.deviceId, moduleId: event.moduleId }, event.body);
    if (outcome.outcome === 'rejected') return { result: 'rejected', code: outcome.code, detail: outcome.reason };
    // Feedback proves the gateway is reachable: deliveries waiting for it need not sit out their backoff.
    this.#gatewayAlive(event.deviceId);
    if (outcome.outcome === 'unknown-job') return { result: 'rejected', code: 'FEEDBACK_UNKNOWN_JOB', detail: outcome.message.jobId };
    return { result: outcome.outcome === 'applied' ? 'applied' : outcome.outcome === 'duplicate' ? 'duplicate' : 'stale' };
  }

  #gatewayAlive(gatewayId: string): void {
    if (this.#store.expediteGateway(gatewayId, Date.now()) > 0) this.#queue.kick();
  }

  /** A device created outside the API (portal, CLI, DPS) is learnt from the twin in its lifecycle event. */
  #registerDiscovered(deviceId: string, twinValue: unknown): void {
    if (this.#store.getDevice(deviceId)) return;
    const twin = (typeof twinValue === 'object' && twinValue !== null ? twinValue : {}) as TwinShape;
    const isGateway = twin.capabilities?.iotEdge === true;
    const parentScope = isGateway ? (Array.isArray(twin.parentScopes) ? twin.parentScopes[0] as unknown : undefined) : twin.deviceScope;
    const tags: Record<string, string> = {};
    for (const [k, v] of Object.entries(twin.tags ?? {})) if (typeof v === 'string') tags[k] = v;
    this.#store.insertDevice({
      deviceId, parentId: typeof parentScope === 'string' ? gatewayOfScope(parentScope) : undefined, isGateway,
      group: typeof twin.tags?.group === 'string' ? twin.tags.group : undefined, tags, assignedUpdateId: undefined,
      lifecycle: 'registered', lifecycleAt: undefined, installedVersion: undefined, createdAt: new Date().toISOString(),
    });
  }

  #history(deviceId: string, status: string, at: string): void {
    this.#store.addHistory(deviceId, { at, jobId: undefined, kind: 'lifecycle', step: undefined, status, resultCode: undefined, extendedResultCode: undefined, details: undefined });
  }
}
