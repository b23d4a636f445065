import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { SmpClient, SmpDeviceError, SmpTimeoutError } from './smpClient.ts';
import type { SmpClientOptions } from './smpClient.ts';
import type { ByteLink } from './link.ts';
import { McubootImageError, verifyMcubootImage } from './mcubootImage.ts';
import type { VerifiedImage } from './mcubootImage.ts';
import { echo, readParams, reset } from './osGroup.ts';
import type { McumgrParams } from './osGroup.ts';
import { UploadError, confirmImage, readImageState, testImage, uploadImage } from './imageGroup.ts';
import type { ImageSlot } from './imageGroup.ts';
import { SERIAL_RESULT_CODES } from './resultCodes.ts';
import type { SerialResultCode } from './resultCodes.ts';

export type FlashPhase =
  | 'verify'
  | 'connect'
  | 'upload'
  | 'test'
  | 'reset'
  | 'reconnect'
  | 'check'
  | 'health'
  | 'confirm'
  | 'rollback';

export interface FlashProgress {
  mcuId: string;
  phase: FlashPhase;
  bytesSent: number;
  totalBytes: number;
  /** Data bytes in the last chunk (upload phase only). */
  chunkSize?: number;
  /** Chunks that went unanswered so far (upload phase only). */
  retries?: number;
}

interface Outcome {
  mcuId: string;
  code: SerialResultCode | undefined;
  extendedResultCode: number;
}

export type FlashResult =
  | (Outcome & { outcome: 'confirmed'; version: string; hash: string; alreadyInstalled: boolean; code: undefined })
  /** The image failed a check before anything was sent; the MCU was not touched. */
  | (Outcome & { outcome: 'refused'; code: SerialResultCode; reason: string })
  /** Something failed before the reset; the MCU still runs the image it ran before. */
  | (Outcome & { outcome: 'failed'; code: SerialResultCode; phase: FlashPhase; reason: string; runningVersion?: string })
  /** The new image booted but did not pass; MCUboot reverted. `runningVersion` is what the MCU reports now. */
  | (Outcome & { outcome: 'rolledback'; code: SerialResultCode; phase: FlashPhase; reason: string; runningVersion?: string; runningHash?: string });

export interface FlashFlowOptions {
  mcuId: string;
  link: ByteLink;
  image: Uint8Array;
  /** The signing key configured for this MCU; images not signed by it are refused. */
  publicKey: KeyObject | string;
  expectedVersion?: string;
  /** Secondary slot size in bytes: larger images are refused before upload. */
  slotSize?: number;
  imageNumber?: number;
  client?: SmpClientOptions;
  firstChunkTimeoutMs?: number;
  /** Upload chunks in flight at once; defaults to the device's buf_count (at most 4), 1 when it does not say. */
  window?: number;
  /** How long the MCU may take to come back after a reset (bootloader swap included). */
  rebootTimeoutMs?: number;
  /** App-specific check after the echo; throw or return false to reject the new image. */
  healthCheck?: (client: SmpClient) => Promise<boolean | void>;
}

export interface FlashFlowEvents {
  progress: [FlashProgress];
}

class StepFailure extends Error {
  readonly code: SerialResultCode;
  constructor(code: SerialResultCode, message: string) {
    super(message);
    this.code = code;
  }
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const sameHash = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

/**
 * verify -> upload to the secondary slot -> mark for test -> reset -> reconnect -> check the new image runs
 * unconfirmed -> health check -> confirm. Every failure after the reset resets again without confirming, so
 * MCUboot reverts, and the result names the version actually running afterwards.
 */
export class FlashFlow extends EventEmitter<FlashFlowEvents> {
  readonly #o: FlashFlowOptions;
  #client: SmpClient | undefined;

  constructor(options: FlashFlowOptions) {
    super();
    this.#o = options;
  }

  #progress(phase: FlashPhase, bytesSent = 0, extra: Partial<FlashProgress> = {}): void {
    this.emit('progress', { mcuId: this.#o.mcuId, phase, bytesSent, totalBytes: this.#o.image.length, ...extra });
  }

  async run(): Promise<FlashResult> {
    const { mcuId } = this.#o;
    this.#progress('verify');
    let verified: VerifiedImage;
    try {
      verified = verifyMcubootImage(this.#o.image, {
        publicKey: this.#o.publicKey,
        ...(this.#o.slotSize !== undefined ? { maxSize: this.#o.slotSize } : {}),
        ...(this.#o.expectedVersion !== undefined ? { expectedVersion: this.#o.expectedVersion } : {}),
      });
    } catch (error) {
      if (!(error instanceof McubootImageError)) throw error;
      return { outcome: 'refused', mcuId, code: error.code, extendedResultCode: SERIAL_RESULT_CODES[error.code], reason: error.message };
    }

    const client = new SmpClient(this.#o.link, this.#o.client);
    this.#client = client;
    try {
      return await this.#flash(client, verified);
    } finally {
      client.close();
      this.#client = undefined;
    }
  }

  /** The client of a running flow, for diagnostics (stats); undefined when no flow runs. */
  get client(): SmpClient | undefined {
    return this.#client;
  }

  async #flash(client: SmpClient, verified: VerifiedImage): Promise<FlashResult> {
    const { mcuId } = this.#o;
    const imageNumber = this.#o.imageNumber ?? 0;
    let phase: FlashPhase = 'connect';
    const failed = (code: SerialResultCode, reason: string, runningVersion?: string): FlashResult => ({
      outcome: 'failed',
      mcuId,
      code,
      extendedResultCode: SERIAL_RESULT_CODES[code],
      phase,
      reason,
      ...(runningVersion !== undefined ? { runningVersion } : {}),
    });

    let before: ImageSlot[];
    let params: McumgrParams;
    try {
      this.#progress(phase);
      params = await readParams(client);
      before = (await readImageState(client)).filter((s) => s.image === imageNumber);
    } catch (error) {
      return failed(classify(error, 'device-unreachable'), describe(error));
    }
    const running = before.find((s) => s.active);
    if (running && sameHash(running.hash, verified.hash)) {
      if (running.confirmed) return this.#confirmed(verified, true);
      // A previous flow was cut off after the reset: the image runs on trial, so finish its checks.
      return this.#afterReset(client, verified, true);
    }

    try {
      phase = 'upload';
      const staged = before.find((s) => !s.active && sameHash(s.hash, verified.hash));
      if (staged) {
        this.#progress(phase, this.#o.image.length);
      } else {
        await uploadImage(client, this.#o.image, {
          bufSize: params.bufSize,
          // Pipelining needs the device to say it has buffers for it; then stay within them.
          window: this.#o.window ?? (params.reported ? Math.min(params.bufCount, 4) : 1),
          alreadyComplete: async () =>
            (await readImageState(client)).some((s) => !s.active && s.image === imageNumber && sameHash(s.hash, verified.hash)),
          imageNumber,
          ...(this.#o.firstChunkTimeoutMs !== undefined ? { firstChunkTimeoutMs: this.#o.firstChunkTimeoutMs } : {}),
          onProgress: (p) => this.#progress('upload', p.bytesSent, { chunkSize: p.chunkSize, retries: p.retries }),
        });
      }
      phase = 'test';
      this.#progress(phase, this.#o.image.length);
      const state = await testImage(client, verified.hash);
      const marked = state.find((s) => sameHash(s.hash, verified.hash));
      if (!marked?.pending) return failed('test-mark-failed', 'device did not mark the image pending', running?.version);
    } catch (error) {
      const code = phase === 'upload' ? classify(error, 'upload-failed') : classify(error, 'test-mark-failed');
      return failed(code, describe(error), running?.version);
    }

    this.#progress('reset', this.#o.image.length);
    await reset(client).catch(() => {
      // Whether the reset landed is decided by what the MCU reports after it, in the check phase.
    });
    return this.#afterReset(client, verified, false);
  }

  async #afterReset(client: SmpClient, verified: VerifiedImage, resumedTrial: boolean): Promise<FlashResult> {
    let phase: FlashPhase = 'reconnect';
    try {
      if (!resumedTrial) {
        this.#progress(phase, this.#o.image.length);
        await this.#waitForDevice(client);
      }

      phase = 'check';
      this.#progress(phase, this.#o.image.length);
      const state = await readImageState(client);
      const active = state.find((s) => s.active && s.image === (this.#o.imageNumber ?? 0));
      if (!active || !sameHash(active.hash, verified.hash)) {
        throw new StepFailure('new-image-not-active', `after the reset the MCU runs ${active?.version ?? 'nothing it reports'}, not ${verified.version}`);
      }
      if (active.version !== verified.version) {
        throw new StepFailure('new-image-wrong-version', `MCU reports version ${active.version}, image header says ${verified.version}`);
      }
      if (active.confirmed) {
        throw new StepFailure('new-image-already-confirmed', 'the new image is already confirmed: it was not booted on trial');
      }

      phase = 'health';
      this.#progress(phase, this.#o.image.length);
      const probe = randomBytes(8).toString('hex');
      let answer: string;
      try {
        answer = await echo(client, probe);
      } catch (error) {
        throw new StepFailure('health-echo-failed', `echo failed: ${describe(error)}`);
      }
      if (answer !== probe) throw new StepFailure('health-echo-failed', `echo answered "${answer}" to "${probe}"`);
      if (this.#o.healthCheck) {
        let healthy: boolean | void;
        try {
          healthy = await this.#o.healthCheck(client);
        } catch (error) {
          throw new StepFailure('health-app-failed', `app health check failed: ${describe(error)}`);
        }
        if (healthy === false) throw new StepFailure('health-app-failed', 'app health check reported unhealthy');
      }

      phase = 'confirm';
      this.#progress(phase, this.#o.image.length);
      try {
        await confirmImage(client, verified.hash);
      } catch (error) {
        // A lost reply leaves it open whether the confirm landed; the slot state says which.
        if (!(error instanceof SmpTimeoutError)) throw new StepFailure('confirm-failed', describe(error));
      }
      const after = await readImageState(client);
      const confirmed = after.find((s) => s.active && sameHash(s.hash, verified.hash));
      if (!confirmed?.confirmed) throw new StepFailure('confirm-failed', 'the image is still unconfirmed after confirm');
      return this.#confirmed(verified, false);
    } catch (error) {
      const code = error instanceof StepFailure ? error.code : AFTER_RESET_CODES[phase];
      return this.#rollback(client, verified, phase, code, describe(error));
    }
  }

  #confirmed(verified: VerifiedImage, alreadyInstalled: boolean): FlashResult {
    this.#progress('confirm', this.#o.image.length);
    return {
      outcome: 'confirmed',
      mcuId: this.#o.mcuId,
      code: undefined,
      extendedResultCode: 0,
      version: verified.version,
      hash: hex(verified.hash),
      alreadyInstalled,
    };
  }

  /** Resets without confirming so MCUboot reverts, then reports what really runs. */
  async #rollback(
    client: SmpClient,
    verified: VerifiedImage,
    failedPhase: FlashPhase,
    code: SerialResultCode,
    reason: string,
  ): Promise<FlashResult> {
    this.#progress('rollback', this.#o.image.length);
    const result: FlashResult = {
      outcome: 'rolledback',
      mcuId: this.#o.mcuId,
      code,
      extendedResultCode: SERIAL_RESULT_CODES[code],
      phase: failedPhase,
      reason,
    };
    try {
      let active: ImageSlot | undefined;
      // Two resets at most: if the first one only now swapped the pending image in on trial (the reset before
      // the check never happened), the second makes MCUboot revert it.
      for (let resets = 0; resets < 2; resets++) {
        await reset(client);
        await this.#waitForDevice(client);
        active = (await readImageState(client)).find((s) => s.active && s.image === (this.#o.imageNumber ?? 0));
        if (!active || !sameHash(active.hash, verified.hash) || active.confirmed) break;
      }
      if (active) return { ...result, runningVersion: active.version, runningHash: hex(active.hash) };
    } catch (error) {
      return { ...result, reason: `${reason}; and after the revert reset: ${describe(error)}` };
    }
    return result;
  }

  /** Polls with echo until the rebooted MCU answers; bounded by rebootTimeoutMs. */
  async #waitForDevice(client: SmpClient): Promise<void> {
    const deadline = Date.now() + (this.#o.rebootTimeoutMs ?? 30_000);
    for (let attempt = 0; attempt < 10_000; attempt++) {
      try {
        await echo(client, 'boot?', 500, 0);
        return;
      } catch (error) {
        if (!(error instanceof SmpTimeoutError) && !(error instanceof Error && error.name === 'LinkDownError')) throw error;
        if (Date.now() > deadline) throw new StepFailure('reconnect-timeout', 'MCU did not answer after the reset');
        // A device that is down makes echo fail fast; do not spin.
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    throw new StepFailure('reconnect-timeout', 'MCU did not answer after the reset');
  }
}

/** What an unexpected error (a timeout, the link gone, a device error) means in each phase after the reset. */
const AFTER_RESET_CODES: Record<FlashPhase, SerialResultCode> = {
  verify: 'reconnect-timeout',
  connect: 'reconnect-timeout',
  upload: 'reconnect-timeout',
  test: 'reconnect-timeout',
  reset: 'reconnect-timeout',
  reconnect: 'reconnect-timeout',
  check: 'new-image-not-active',
  health: 'health-echo-failed',
  confirm: 'confirm-failed',
  rollback: 'reconnect-timeout',
};

/** Timeouts and a vanished link map to the phase's own code; a device error is reported as such. */
function classify(error: unknown, fallback: SerialResultCode): SerialResultCode {
  if (error instanceof StepFailure) return error.code;
  if (error instanceof SmpDeviceError) return 'device-error';
  if (error instanceof UploadError) return 'upload-failed';
  return fallback;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
