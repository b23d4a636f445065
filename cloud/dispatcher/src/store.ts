import type { FeedbackMessage, ImportManifest } from '@edge-ota/common';

// What the dispatcher keeps, behind one interface: SQLite is the embedded default (sqliteStore.ts); a server
// database can implement the same interface and must pass test/storeContract.ts. Every method is synchronous
// and atomic: the dispatcher commits a record before it acts on it.

export interface DeviceRecord {
  deviceId: string;
  /** The edge gateway the device sits behind; undefined for a top-level device or gateway. */
  parentId: string | undefined;
  isGateway: boolean;
  group: string | undefined;
  tags: Record<string, string>;
  /** Assigned by update id; when undefined the group's rule decides. */
  assignedUpdateId: string | undefined;
  /** `registered` (API), `live` (create event seen), `deleted` (delete event seen). */
  lifecycle: 'registered' | 'live' | 'deleted';
  /** enqueuedTime of the last lifecycle event applied; orders out-of-order events. */
  lifecycleAt: string | undefined;
  installedVersion: string | undefined;
  createdAt: string;
  /** Counts reassignments of the device's update (0 when never reassigned); part of the job id of every job after one. */
  assignmentRevision?: number;
}

export interface CatalogFile {
  filename: string;
  sizeInBytes: number;
  /** base64, as in manifests. */
  sha256: string;
  artifactKey: string;
}

export interface CatalogUpdate {
  /** `provider/name@version` (formatUpdateId). */
  updateId: string;
  provider: string;
  name: string;
  version: string;
  importManifest: ImportManifest;
  files: CatalogFile[];
  source: 'import' | 'bundle';
  importedAt: string;
}

export type DeliveryState = 'pending' | 'delivered' | 'cancelled';

export interface DeliveryRecord {
  jobId: string;
  deviceId: string;
  gatewayId: string;
  updateId: string;
  state: DeliveryState;
  /** The exact UpdateDelivery JSON sent by direct method (built and signed once, so retries are identical). */
  payload: string;
  /** The UpdateDelivery JSON written to the module twin when the direct path fails (a detached pointer if needed). */
  twinPayload: string;
  attempts: number;
  nextAttemptAt: number;
  twinWritten: boolean;
  lastError: string | undefined;
  createdAt: string;
  deliveredAt: string | undefined;
}

/**
 * `dispatched`: the dispatcher recorded and delivered the job. `offline`: an orchestrator ran it without the
 * dispatcher (USB drop-in bundle, cloud cut off) and the dispatcher learnt of it from its feedback.
 */
export type JobOrigin = 'dispatched' | 'offline';

export interface JobStatus {
  jobId: string;
  deviceId: string;
  updateId: string;
  origin: JobOrigin;
  step: string | undefined;
  status: string | undefined;
  lastSequence: number;
  resultCode: number | undefined;
  extendedResultCode: number | undefined;
  resultDetails: string | undefined;
  terminal: boolean;
  updatedAt: string | undefined;
}

export interface HistoryEntry {
  at: string;
  jobId: string | undefined;
  kind: 'lifecycle' | 'delivery' | 'feedback';
  step: string | undefined;
  status: string;
  resultCode: number | undefined;
  extendedResultCode: number | undefined;
  details: string | undefined;
}

export interface CheckpointRecord {
  fullyQualifiedNamespace: string;
  eventHubName: string;
  consumerGroup: string;
  partitionId: string;
  offset: string;
  sequenceNumber: number;
}

export interface OwnershipRecord {
  fullyQualifiedNamespace: string;
  eventHubName: string;
  consumerGroup: string;
  partitionId: string;
  ownerId: string;
  etag: string;
  lastModifiedTimeInMs: number;
}

export type FeedbackOutcome = 'applied' | 'duplicate' | 'stale' | 'unknown-job';

export interface DispatcherStore {
  // devices
  insertDevice(device: DeviceRecord): boolean;
  getDevice(deviceId: string): DeviceRecord | undefined;
  /** Undoes insertDevice when IoT Hub refused the identity (only a device without jobs). */
  removeDevice(deviceId: string): void;
  /** Sets (or clears, so the group rule applies) the device's own update and counts the reassignment; undefined if no such device. */
  reassignDevice(deviceId: string, assignedUpdateId: string | undefined): DeviceRecord | undefined;
  listDevices(options: { group?: string; limit: number; after?: string }): DeviceRecord[];
  /** Applies a lifecycle event unless a later one was applied already; returns whether it was applied. */
  applyLifecycle(deviceId: string, lifecycle: 'live' | 'deleted', at: string): boolean;
  setGroupRule(group: string, updateId: string | undefined): void;
  groupRule(group: string): string | undefined;
  listGroupRules(): Array<{ group: string; updateId: string }>;
  // catalog
  /**
   * Inserts updates all together or not at all (a parent with the children imported beside it): when one of them is
   * in the catalog already, nothing is inserted and its updateId is returned.
   */
  insertUpdates(updates: readonly CatalogUpdate[]): string | undefined;
  getUpdate(updateId: string): CatalogUpdate | undefined;
  listUpdates(): CatalogUpdate[];
  // deliveries
  /** Records a delivery (before it is attempted); false if the job exists already. */
  insertDelivery(delivery: DeliveryRecord): boolean;
  /** Deliveries are the dispatched jobs only: an offline job has none. */
  getDelivery(jobId: string): DeliveryRecord | undefined;
  deliveriesFor(deviceId: string): DeliveryRecord[];
  /** Up to `limit` pending deliveries due by `now`, oldest due first, leaving out the job ids in `skip` (attempts in flight). */
  dueDeliveries(now: number, limit: number, skip?: ReadonlySet<string>): DeliveryRecord[];
  nextDueAt(): number | undefined;
  /** `rejected`: the orchestrator refused the job (bad signature, incompatible device...): the job fails at step `manifest`. */
  markAttempt(jobId: string, result: { delivered: boolean; error?: string; nextAttemptAt: number; twinWritten?: boolean; rejected?: { resultCode: number; extendedResultCode: number; details: string } }): void;
  /** Cancels the device's deliveries not made yet (but `keepJobId`); returns them. */
  cancelPending(deviceId: string, reason: string, keepJobId?: string): Array<{ jobId: string; gatewayId: string; twinWritten: boolean }>;
  /** Makes every pending delivery to this gateway due now (it showed signs of life). */
  expediteGateway(gatewayId: string, now: number): number;
  // events and feedback
  /** Records an event id; false if it was seen before (the event is a duplicate). */
  markEventSeen(eventId: string, at: string): boolean;
  isEventSeen(eventId: string): boolean;
  /**
   * Applies one feedback message to its job. A message for a job the store does not know is `unknown-job`,
   * unless `adoptUnknownJob` is set (the caller has checked that the sender is the otaOrchestrator of
   * `message.gatewayId`) and `message.deviceId` is a known device that is that gateway or has it as parent: then
   * the job is recorded with origin `offline` (gateway and update from the message, created at the earliest
   * feedback timestamp seen) and the message is applied like any other, in the same transaction.
   */
  applyFeedback(message: FeedbackMessage, options?: { adoptUnknownJob?: boolean }): FeedbackOutcome;
  jobStatus(jobId: string): JobStatus | undefined;
  jobsFor(deviceId: string): JobStatus[];
  history(deviceId: string, limit: number): HistoryEntry[];
  addHistory(deviceId: string, entry: HistoryEntry): void;
  // views
  countsByUpdate(): Array<{ updateId: string; state: string; count: number }>;
  countsByGroup(): Array<{ group: string; state: string; count: number }>;
  failedDevices(limit: number): Array<{ deviceId: string; jobId: string; updateId: string; step: string | undefined; resultCode: number | undefined; extendedResultCode: number | undefined; resultDetails: string | undefined; at: string | undefined }>;
  // Event Hubs checkpoints and partition ownership (the consumer's CheckpointStore)
  listCheckpoints(namespace: string, eventHub: string, consumerGroup: string): CheckpointRecord[];
  saveCheckpoint(checkpoint: CheckpointRecord): void;
  listOwnership(namespace: string, eventHub: string, consumerGroup: string): OwnershipRecord[];
  /** Claims when the stored etag matches (or there is none); returns the stored record or undefined if lost. */
  claimOwnership(claim: OwnershipRecord, expectedEtag: string | undefined): OwnershipRecord | undefined;
  close(): void;
}
