import type { McuFlashPhase, McuFlashProgress, McuFlashStatus } from '@edge-ota/common';
import { MCU_FLASH_SCHEMA, RESULT_FAILURE, RESULT_SUCCESS } from '@edge-ota/common';
import type { FlashPhase, FlashProgress, FlashResult } from './flashFlow.ts';
import type { FwUpdateStatus } from './mcuIdentity.ts';

// FlashFlow's phases and results in the words of the contract (edge-ota/mcu-flash/1) and of the MCU twin's
// classic firmware-update status, plus the throttle that keeps per-chunk progress off the wire.

const CONTRACT_PHASES: Record<FlashPhase, McuFlashPhase> = {
  verify: 'verifying',
  connect: 'verifying',
  upload: 'uploading',
  test: 'testing',
  reset: 'rebooting',
  reconnect: 'rebooting',
  check: 'healthCheck',
  health: 'healthCheck',
  confirm: 'confirming',
  rollback: 'rebooting',
};

export function contractPhase(phase: FlashPhase): McuFlashPhase {
  return CONTRACT_PHASES[phase];
}

export function twinStatusOf(phase: McuFlashPhase, status: McuFlashStatus): FwUpdateStatus {
  if (status === 'succeeded') return 'current';
  if (status === 'rolledBack') return 'rolledback';
  if (status !== 'inProgress') return 'error';
  if (phase === 'queued') return 'downloading';
  if (phase === 'verifying') return 'verifying';
  if (phase === 'rebooting') return 'rebooting';
  return 'applying';
}

export function flowProgress(jobId: string, mcuId: string, p: FlashProgress): McuFlashProgress {
  return { schema: MCU_FLASH_SCHEMA, jobId, mcuId, phase: contractPhase(p.phase), status: 'inProgress', bytesSent: p.bytesSent, totalBytes: p.totalBytes };
}

/** The final progress for a FlashFlow result; `knownVersion` is what the MCU ran before, when the flow did not say. */
export function finalProgress(jobId: string, mcuId: string, result: FlashResult, totalBytes: number, bytesSent: number, knownVersion?: string): McuFlashProgress {
  const base = { schema: MCU_FLASH_SCHEMA, jobId, mcuId, phase: 'done', totalBytes } as const;
  switch (result.outcome) {
    case 'confirmed':
      return {
        ...base,
        status: 'succeeded',
        bytesSent: result.alreadyInstalled ? 0 : totalBytes,
        runningVersion: result.version,
        resultCode: RESULT_SUCCESS,
        extendedResultCode: 0,
        ...(result.alreadyInstalled ? { resultDetails: `version ${result.version} was already installed and confirmed` } : {}),
      };
    case 'refused':
      return failure(base, 'refused', 0, result.extendedResultCode, `${result.code}: ${result.reason}`, knownVersion);
    case 'failed':
      return failure(base, 'failed', bytesSent, result.extendedResultCode, `${result.code} in ${result.phase}: ${result.reason}`, result.runningVersion ?? knownVersion);
    case 'rolledback':
      return failure(base, 'rolledBack', totalBytes, result.extendedResultCode, `${result.code} in ${result.phase}: ${result.reason}`, result.runningVersion);
  }
}

export function failure(
  base: { schema: typeof MCU_FLASH_SCHEMA; jobId: string; mcuId: string; phase: 'done'; totalBytes?: number },
  status: McuFlashStatus,
  bytesSent: number,
  extendedResultCode: number,
  details: string,
  runningVersion?: string,
): McuFlashProgress {
  return {
    ...base,
    status,
    bytesSent,
    resultCode: RESULT_FAILURE,
    extendedResultCode,
    resultDetails: details.slice(0, 2048),
    ...(runningVersion !== undefined ? { runningVersion } : {}),
  };
}

/**
 * Decides which progress goes on the wire: every phase change and the final one always; within the upload, one
 * every `percentStep` percent or every `intervalMs`, whichever comes first.
 */
export class ProgressThrottle {
  readonly #percentStep: number;
  readonly #intervalMs: number;
  #lastPhase: McuFlashPhase | undefined;
  #lastBytes = 0;
  #lastAt = 0;

  constructor(percentStep: number, intervalMs: number) {
    this.#percentStep = percentStep;
    this.#intervalMs = intervalMs;
  }

  shouldSend(progress: McuFlashProgress, now = Date.now()): boolean {
    const phaseChanged = progress.phase !== this.#lastPhase;
    const total = progress.totalBytes ?? 0;
    const bytes = progress.bytesSent ?? 0;
    // Either way: an upload that starts over (the device lost it) is news as well.
    const stepReached = total > 0 && (Math.abs(bytes - this.#lastBytes) * 100) / total >= this.#percentStep;
    const send = phaseChanged || progress.status !== 'inProgress' || stepReached || now - this.#lastAt >= this.#intervalMs || (total > 0 && bytes === total && this.#lastBytes !== total);
    if (send) {
      this.#lastPhase = progress.phase;
      this.#lastBytes = bytes;
      this.#lastAt = now;
    }
    return send;
  }
}
