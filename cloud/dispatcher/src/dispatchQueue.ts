import type { ApplyUpdateReply, UpdateDelivery } from '@edge-ota/common';
import { APPLY_UPDATE_METHOD, DEVICE_UPDATE_TWIN_PROPERTY, WORKFLOW_CANCEL } from '@edge-ota/common';
import type { IdentityHub } from './hubClient.ts';
import type { DeliveryRecord, DispatcherStore } from './store.ts';

// Persisted delivery work. A delivery is a row in the store before the first attempt, so a dispatcher that
// dies between the event and the call picks it up again at start-up. Each attempt calls `applyUpdate` on
// `{gateway}/otaOrchestrator`; when that fails (module offline, gateway cut off, timeout) the delivery is
// written once into the module twin's desired `deviceUpdate.service` (the orchestrator picks it up when it
// reconnects) and the direct call is retried with exponential backoff until the orchestrator accepts it.

export const ORCHESTRATOR_MODULE = 'otaOrchestrator';

export interface DispatchQueueOptions {
  store: DispatcherStore;
  hub: IdentityHub;
  /** Parallel deliveries in flight. */
  concurrency?: number;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  methodTimeoutSeconds?: number;
  log?: (line: string) => void;
  /** Called when a delivery reached the orchestrator (bench and tests measure with it). */
  onDelivered?: (delivery: DeliveryRecord) => void;
  /**
   * Re-issues the download URLs of a stored delivery just before it is sent. They travel beside the signed
   * manifest, not inside it, so a late retry can carry fresh ones (new expiry, the dispatcher's current address).
   */
  refreshUrls?: (fileUrls: Record<string, string>) => Record<string, string>;
}

export class DispatchQueue {
  readonly #store: DispatcherStore;
  readonly #hub: IdentityHub;
  readonly #concurrency: number;
  readonly #initialBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #methodTimeoutSeconds: number;
  readonly #log: (line: string) => void;
  readonly #onDelivered: ((delivery: DeliveryRecord) => void) | undefined;
  readonly #refreshUrls: (fileUrls: Record<string, string>) => Record<string, string>;
  readonly #inFlight = new Set<string>();
  readonly #running = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #kicked = false;
  #stopped = true;

  constructor(options: DispatchQueueOptions) {
    this.#store = options.store;
    this.#hub = options.hub;
    this.#concurrency = options.concurrency ?? 64;
    this.#initialBackoffMs = options.initialBackoffMs ?? 1000;
    this.#maxBackoffMs = options.maxBackoffMs ?? 60_000;
    this.#methodTimeoutSeconds = options.methodTimeoutSeconds ?? 30;
    this.#log = options.log ?? (() => undefined);
    this.#onDelivered = options.onDelivered;
    this.#refreshUrls = options.refreshUrls ?? ((urls) => urls);
  }

  start(): void {
    this.#stopped = false;
    this.kick();
  }

  /** Stops taking work; attempts in flight get `graceMs` to finish (an unfinished one stays pending in the store). */
  async stop(graceMs = 2_000): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([...this.#running]),
      new Promise((resolve) => {
        timer = setTimeout(resolve, graceMs);
      }),
    ]);
    clearTimeout(timer);
  }

  /**
   * Looks for due work now (a new delivery was recorded, or a gateway came back). Kicks in one synchronous stretch
   * coalesce into one look, taken as soon as that stretch ends (a microtask, not a timer): the Event Hubs consumer
   * runs a batch of events as one long task, and a timer would hold every delivery recorded in it until the whole
   * batch is done (measured in the dispatch bench: most of the time between recording and delivery).
   */
  kick(): void {
    if (this.#stopped || this.#kicked) return;
    this.#kicked = true;
    queueMicrotask(() => {
      this.#kicked = false;
      if (this.#stopped) return;
      if (this.#timer) clearTimeout(this.#timer);
      this.#fill();
    });
  }

  #fill(): void {
    this.#timer = undefined;
    if (this.#stopped) return;
    const free = this.#concurrency - this.#inFlight.size;
    if (free > 0) {
      const due = this.#store.dueDeliveries(Date.now(), free, this.#inFlight);
      for (const delivery of due) {
        this.#inFlight.add(delivery.jobId);
        const run = this.#attempt(delivery).catch((error: unknown) => this.#log(`dispatch ${delivery.jobId}: ${(error as Error).message}`)).finally(() => {
          this.#inFlight.delete(delivery.jobId);
          this.#running.delete(run);
          this.kick();
        });
        this.#running.add(run);
      }
    }
    // Sleep until the next retry is due; a kick() cuts the sleep short.
    const next = this.#store.nextDueAt();
    if (next !== undefined && this.#inFlight.size < this.#concurrency) {
      this.#timer = setTimeout(() => this.#fill(), Math.min(Math.max(next - Date.now(), 10), 5_000));
    }
  }

  /**
   * Replaces a cancelled job's twin fallback with ADU's cancel workflow, so a gateway that comes back does not
   * start it. The twin holds one job at a time; other pending jobs of that gateway still go by direct method.
   */
  async cancelTwin(cancelled: { jobId: string; gatewayId: string; deviceId: string }): Promise<void> {
    const cancel: UpdateDelivery = {
      workflow: { action: WORKFLOW_CANCEL, id: cancelled.jobId }, updateManifest: '', updateManifestSignature: '', fileUrls: {}, target: { deviceId: cancelled.deviceId },
    };
    try {
      await this.#hub.patchModuleDesired(cancelled.gatewayId, ORCHESTRATOR_MODULE, { [DEVICE_UPDATE_TWIN_PROPERTY]: { service: cancel } });
    } catch (error) {
      this.#log(`cancel ${cancelled.jobId} in ${cancelled.gatewayId}'s twin: ${(error as Error).message}`);
    }
  }

  async #attempt(delivery: DeliveryRecord): Promise<void> {
    const stored = JSON.parse(delivery.payload) as UpdateDelivery;
    const payload: UpdateDelivery = { ...stored, fileUrls: this.#refreshUrls(stored.fileUrls) };
    let error: string;
    try {
      const outcome = await this.#hub.invokeModuleMethod(delivery.gatewayId, ORCHESTRATOR_MODULE, APPLY_UPDATE_METHOD, payload, this.#methodTimeoutSeconds);
      const reply = outcome.payload as Partial<ApplyUpdateReply> | undefined;
      const answered = outcome.status >= 200 && outcome.status < 300 && (reply?.accepted === true || reply?.disposition === 'duplicate');
      // A refusal is final whatever status carries it: retrying the same signed bytes cannot change the answer.
      if (answered || reply?.disposition === 'rejected') {
        // A rejected job is delivered too: the orchestrator has decided; the job fails at the manifest step.
        const rejected = reply?.disposition === 'rejected'
          ? { resultCode: reply.resultCode ?? 0, extendedResultCode: reply.extendedResultCode ?? 0, details: reply.resultDetails ?? 'rejected by the orchestrator' }
          : undefined;
        this.#store.markAttempt(delivery.jobId, { delivered: true, nextAttemptAt: Date.now(), ...(rejected ? { rejected, error: `rejected: ${rejected.details}` } : {}) });
        const stored = this.#store.getDelivery(delivery.jobId);
        if (stored) this.#onDelivered?.(stored);
        return;
      }
      error = `applyUpdate answered ${outcome.status}: ${JSON.stringify(outcome.payload)?.slice(0, 200)}`;
    } catch (cause) {
      error = `${(cause as Error).name}: ${(cause as Error).message}`;
    }
    // Cancelled (device deleted) while the call was out: do not put it into the twin again.
    if (this.#stopped || this.#store.getDelivery(delivery.jobId)?.state !== 'pending') return;
    let twinWritten = delivery.twinWritten;
    if (!twinWritten) {
      try {
        const twin = JSON.parse(delivery.twinPayload) as UpdateDelivery;
        const service: UpdateDelivery = { ...twin, fileUrls: this.#refreshUrls(twin.fileUrls) };
        await this.#hub.patchModuleDesired(delivery.gatewayId, ORCHESTRATOR_MODULE, { [DEVICE_UPDATE_TWIN_PROPERTY]: { service } });
        twinWritten = true;
      } catch (cause) {
        error += `; twin: ${(cause as Error).message}`;
      }
    }
    const backoff = Math.min(this.#maxBackoffMs, this.#initialBackoffMs * 2 ** Math.min(delivery.attempts, 16));
    // Jitter keeps many deliveries to one returning gateway from retrying in lockstep.
    const nextAttemptAt = Date.now() + Math.round(backoff * (0.8 + Math.random() * 0.4));
    this.#store.markAttempt(delivery.jobId, { delivered: false, error, nextAttemptAt, twinWritten });
    this.#log(`dispatch ${delivery.jobId} to ${delivery.gatewayId}: ${error}; retry in ${nextAttemptAt - Date.now()} ms`);
  }
}
