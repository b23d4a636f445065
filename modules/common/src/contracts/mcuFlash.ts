import { OtaError } from '../errors.ts';
import { contractViolation } from './contractSchemas.ts';

// otaOrchestrator -> serialTranslator on the same gateway (schema: schemas/edge-ota-mcu-flash-1.json).
// The orchestrator calls the direct method `flashFirmware` on serialTranslator with a request; the translator
// answers at once (accepted or refused) and then reports progress as messages on its output `mcuProgress`,
// routed to the orchestrator's input `mcuProgress`. After a restart the orchestrator asks `getFlashStatus`
// ({ jobId }) for the last progress of a job, so no outcome is lost if a message was.

export const MCU_FLASH_SCHEMA = 'edge-ota/mcu-flash/1';
export const FLASH_FIRMWARE_METHOD = 'flashFirmware';
export const GET_FLASH_STATUS_METHOD = 'getFlashStatus';
export const MCU_PROGRESS_OUTPUT = 'mcuProgress';
export const MCU_PROGRESS_INPUT = 'mcuProgress';

export interface McuFlashRequest {
  schema: typeof MCU_FLASH_SCHEMA;
  jobId: string;
  mcuId: string;
  image: { url: string; sha256: string; sizeInBytes: number; version: string };
  healthCheck?: { timeoutSeconds?: number };
}

export type McuFlashPhase = 'queued' | 'verifying' | 'uploading' | 'testing' | 'rebooting' | 'healthCheck' | 'confirming' | 'done';
export type McuFlashStatus = 'inProgress' | 'succeeded' | 'failed' | 'rolledBack' | 'refused';

export interface McuFlashProgress {
  schema: typeof MCU_FLASH_SCHEMA;
  jobId: string;
  mcuId: string;
  phase: McuFlashPhase;
  status: McuFlashStatus;
  bytesSent?: number;
  totalBytes?: number;
  runningVersion?: string;
  resultCode?: number;
  extendedResultCode?: number;
  resultDetails?: string;
}

export function isFinalFlashStatus(status: McuFlashStatus): boolean {
  return status !== 'inProgress';
}

export function parseMcuFlashRequest(value: unknown): McuFlashRequest {
  const violation = contractViolation('mcuFlashRequest', value);
  if (violation) throw new OtaError('MCU_FLASH_REQUEST_INVALID', `flash request ${violation}`, { field: violation.split(':')[0] });
  return value as McuFlashRequest;
}

export function parseMcuFlashProgress(value: unknown): McuFlashProgress {
  const violation = contractViolation('mcuFlashProgress', value);
  if (violation) throw new OtaError('MCU_FLASH_REQUEST_INVALID', `flash progress ${violation}`, { field: violation.split(':')[0] });
  return value as McuFlashProgress;
}
