import { OtaError } from '../errors.ts';
import { contractViolation } from './contractSchemas.ts';

// How an update job reaches a gateway's otaOrchestrator (schema: schemas/edge-ota-update-delivery-1.json):
// the direct method `applyUpdate` carries it whole; when the module is offline or the payload is over the
// method limit, the same object sits in the module twin's desired `deviceUpdate.service` (ADU's shape) with a
// detached-manifest pointer, because twin string values are limited to 4 KB.

export const APPLY_UPDATE_METHOD = 'applyUpdate';
export const DEVICE_UPDATE_TWIN_PROPERTY = 'deviceUpdate';
export const WORKFLOW_PROCESS_DEPLOYMENT = 3;
export const WORKFLOW_CANCEL = 255;
/** IoT Hub's direct method payload limit. */
export const MAX_METHOD_PAYLOAD_BYTES = 128 * 1024;
/** IoT Hub's limit for a string value in a twin. */
export const MAX_TWIN_STRING_BYTES = 4 * 1024;
/** The delivery schema's limit on `fileUrls`: every file of a job (parent, children, a detached manifest) has one. */
export const MAX_DELIVERY_FILE_URLS = 64;

export interface UpdateDelivery {
  workflow: { action: typeof WORKFLOW_PROCESS_DEPLOYMENT | typeof WORKFLOW_CANCEL; id: string; retryTimestamp?: string };
  updateManifest: string;
  updateManifestSignature: string;
  fileUrls: Record<string, string>;
  target?: { deviceId: string };
}

/** What the orchestrator answers to `applyUpdate`. */
export interface ApplyUpdateReply {
  jobId: string;
  accepted: boolean;
  /** `queued` (new job), `duplicate` (already known: nothing done), `cancelling`, or `rejected` with a code. */
  disposition: 'queued' | 'duplicate' | 'cancelling' | 'rejected';
  resultCode?: number;
  extendedResultCode?: number;
  resultDetails?: string;
}

export function parseUpdateDelivery(value: unknown): UpdateDelivery {
  const violation = contractViolation('updateDelivery', value);
  if (violation) throw new OtaError('UPDATE_DELIVERY_INVALID', `update delivery ${violation}`, { field: violation.split(':')[0] });
  return value as UpdateDelivery;
}

/** True when the delivery fits a twin: every string value (manifest, signature, URLs) within 4 KB. */
export function fitsInTwin(delivery: UpdateDelivery): boolean {
  const strings = [delivery.updateManifest, delivery.updateManifestSignature, ...Object.values(delivery.fileUrls)];
  return strings.every((s) => Buffer.byteLength(s) <= MAX_TWIN_STRING_BYTES);
}
