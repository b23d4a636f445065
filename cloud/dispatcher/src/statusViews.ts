import type { DeploymentPlanner } from './deploymentPlanner.ts';
import type { DeviceRecord, DispatcherStore, JobOrigin, JobStatus } from './store.ts';

// What the API shows: a device with its assigned and installed software and where its current job is, the
// fleet counted by state per update and per group, and the failed devices with the step and codes that failed.

export interface JobView {
  jobId: string;
  updateId: string;
  /** `dispatched` (recorded and delivered by the dispatcher) or `offline` (run by an orchestrator without it, reported later). */
  origin: JobOrigin;
  /** pending | delivered | inProgress | succeeded | failed | cancelled */
  state: string;
  delivery: { state: string; attempts: number; twinWritten: boolean; lastError: string | undefined; deliveredAt: string | undefined } | undefined;
  step: string | undefined;
  status: string | undefined;
  resultCode: number | undefined;
  extendedResultCode: number | undefined;
  resultDetails: string | undefined;
  updatedAt: string | undefined;
}

export class StatusViews {
  readonly #store: DispatcherStore;
  readonly #planner: DeploymentPlanner;

  constructor(store: DispatcherStore, planner: DeploymentPlanner) {
    this.#store = store;
    this.#planner = planner;
  }

  device(device: DeviceRecord): Record<string, unknown> {
    const jobs = this.jobs(device.deviceId);
    return {
      deviceId: device.deviceId,
      parentId: device.parentId ?? null,
      isGateway: device.isGateway,
      group: device.group ?? null,
      tags: device.tags,
      lifecycle: device.lifecycle,
      assignedUpdateId: this.#planner.assignedUpdate(device) ?? null,
      assignedBy: device.assignedUpdateId ? 'device' : device.group && this.#store.groupRule(device.group) ? 'group' : null,
      installedVersion: device.installedVersion ?? null,
      currentJob: jobs[jobs.length - 1] ?? null,
      createdAt: device.createdAt,
    };
  }

  jobs(deviceId: string): JobView[] {
    const deliveries = new Map(this.#store.deliveriesFor(deviceId).map((d) => [d.jobId, d]));
    return this.#store.jobsFor(deviceId).map((job: JobStatus) => {
      const d = deliveries.get(job.jobId);
      return {
        jobId: job.jobId,
        updateId: job.updateId,
        origin: job.origin,
        state: stateOf(job, d?.state),
        delivery: d ? { state: d.state, attempts: d.attempts, twinWritten: d.twinWritten, lastError: d.lastError, deliveredAt: d.deliveredAt } : undefined,
        step: job.step,
        status: job.status,
        resultCode: job.resultCode,
        extendedResultCode: job.extendedResultCode,
        resultDetails: job.resultDetails,
        updatedAt: job.updatedAt,
      };
    });
  }

  byUpdate(): Record<string, Record<string, number>> {
    return fold(this.#store.countsByUpdate().map((r) => [r.updateId, r.state, r.count]));
  }

  byGroup(): Record<string, Record<string, number>> {
    return fold(this.#store.countsByGroup().map((r) => [r.group, r.state, r.count]));
  }

  failed(limit: number): ReturnType<DispatcherStore['failedDevices']> {
    return this.#store.failedDevices(limit);
  }
}

function stateOf(job: JobStatus, deliveryState: string | undefined): string {
  if (job.terminal) return job.status === 'succeeded' ? 'succeeded' : job.status === 'cancelled' ? 'cancelled' : 'failed';
  if (job.step) return 'inProgress';
  return deliveryState ?? 'pending';
}

function fold(rows: Array<[string, string, number]>): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [key, state, count] of rows) (out[key] ??= {})[state] = count;
  return out;
}
