import { compareVersions } from '@edge-ota/common';
import type { Catalog } from './catalog.ts';
import type { DispatchQueue } from './dispatchQueue.ts';
import type { ManifestBuilder } from './manifestBuilder.ts';
import { jobIdFor } from './manifestBuilder.ts';
import type { DeviceRecord, DispatcherStore } from './store.ts';

// Decides what a live device must get and records the delivery: the update assigned to the device (or its
// group's rule), sent to the orchestrator that installs it (targetGateway). Idempotent: the job id is derived
// from (device, update, assignment revision), so a repeated create event or a restart finds the delivery recorded
// already. A reassignment (or a group's new rule) cancels what was not delivered yet and plans the new update; an
// update older than the installed version goes out as an intended rollback.

export type PlanOutcome =
  | { planned: true; jobId: string; gatewayId: string; updateId: string }
  | { planned: false; reason: 'no-update-assigned' | 'update-not-in-catalog' | 'no-gateway' | 'already-planned' | 'device-not-live'; jobId?: string };

/**
 * Whose `otaOrchestrator` takes a device's job. A gateway installs its own software, nested or not: a child
 * gateway's nested edgeHub reaches its own module, so nothing is handed on through the parent. A device that is
 * not a gateway (leaf, MCU) is served by its parent gateway's orchestrator; without a parent none can take its job.
 */
export function targetGateway(device: Pick<DeviceRecord, 'deviceId' | 'parentId' | 'isGateway'>): string | undefined {
  return device.isGateway ? device.deviceId : device.parentId;
}

export class DeploymentPlanner {
  readonly #store: DispatcherStore;
  readonly #catalog: Catalog;
  readonly #builder: ManifestBuilder;
  readonly #queue: DispatchQueue;

  constructor(store: DispatcherStore, catalog: Catalog, builder: ManifestBuilder, queue: DispatchQueue) {
    this.#store = store;
    this.#catalog = catalog;
    this.#builder = builder;
    this.#queue = queue;
  }

  assignedUpdate(device: DeviceRecord): string | undefined {
    return device.assignedUpdateId ?? (device.group ? this.#store.groupRule(device.group) : undefined);
  }

  async plan(deviceId: string): Promise<PlanOutcome> {
    const device = this.#store.getDevice(deviceId);
    if (!device || device.lifecycle !== 'live') return { planned: false, reason: 'device-not-live' };
    const updateId = this.assignedUpdate(device);
    const note = (status: string, details: string): void =>
      this.#store.addHistory(deviceId, { at: new Date().toISOString(), jobId: undefined, kind: 'delivery', step: undefined, status, resultCode: undefined, extendedResultCode: undefined, details });
    if (!updateId) {
      note('noUpdateAssigned', 'neither the device nor its group has an update assigned');
      return { planned: false, reason: 'no-update-assigned' };
    }
    const update = this.#catalog.get(updateId);
    if (!update) {
      note('updateNotInCatalog', `${updateId} is not in the catalog`);
      return { planned: false, reason: 'update-not-in-catalog' };
    }
    const gatewayId = targetGateway(device);
    if (!gatewayId) {
      note('noGateway', 'the device has no parent gateway and is not a gateway: no orchestrator can take the job');
      return { planned: false, reason: 'no-gateway' };
    }
    const assignmentRevision = device.assignmentRevision ?? 0;
    const jobId = jobIdFor(deviceId, updateId, assignmentRevision);
    if (this.#store.getDelivery(jobId)) return { planned: false, reason: 'already-planned', jobId };
    const rollback = device.installedVersion !== undefined && compareVersions(update.version, device.installedVersion) < 0;
    const built = await this.#builder.build(update, { deviceId, gatewayId, assignmentRevision, ...(rollback ? { rollback } : {}) }, this.#catalog.childrenOf(update));
    // Recorded before the first attempt: from here on a crash cannot lose the delivery.
    const recorded = this.#store.insertDelivery({
      jobId, deviceId, gatewayId, updateId, state: 'pending', payload: JSON.stringify(built.method), twinPayload: JSON.stringify(built.twin),
      attempts: 0, nextAttemptAt: Date.now(), twinWritten: false, lastError: undefined, createdAt: new Date().toISOString(), deliveredAt: undefined,
    });
    // A delete may have overtaken us while the manifest was being signed.
    if (this.#store.getDevice(deviceId)?.lifecycle === 'deleted') {
      for (const job of this.#store.cancelPending(deviceId, 'device deleted')) if (job.twinWritten) await this.#queue.cancelTwin({ ...job, deviceId });
    }
    else this.#queue.kick();
    return recorded ? { planned: true, jobId, gatewayId, updateId } : { planned: false, reason: 'already-planned', jobId };
  }

  /**
   * After the device's assignment (or its group's rule) changed: deliveries not made yet are cancelled (their twin
   * copies withdrawn), then the update now assigned is planned. A job already delivered runs to its end; the
   * orchestrator runs the new one after it.
   */
  async replan(deviceId: string, reason: string): Promise<PlanOutcome> {
    const device = this.#store.getDevice(deviceId);
    if (!device || device.lifecycle !== 'live') return { planned: false, reason: 'device-not-live' };
    // The job for what is assigned now may be pending already (the same rule set twice): that one stays.
    const assigned = this.assignedUpdate(device);
    const keep = assigned === undefined ? undefined : jobIdFor(deviceId, assigned, device.assignmentRevision ?? 0);
    for (const job of this.#store.cancelPending(deviceId, reason, keep)) if (job.twinWritten) await this.#queue.cancelTwin({ ...job, deviceId });
    return this.plan(deviceId);
  }
}
