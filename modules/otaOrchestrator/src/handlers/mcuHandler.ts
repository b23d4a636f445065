import {
  FLASH_FIRMWARE_METHOD,
  GET_FLASH_STATUS_METHOD,
  MCU_FLASH_SCHEMA,
  OtaError,
  describeExtendedResultCode,
  isFinalFlashStatus,
  parseMcuFlashProgress,
} from '@edge-ota/common';
import type { McuFlashProgress, McuFlashRequest, ResultCodeName } from '@edge-ota/common';
import type { PhaseOutcome, StepContext, UpdateHandler } from './updateHandler.ts';
import { done, failed } from './updateHandler.ts';

// `edge-ota/mcu:1`: hands an MCUboot image to the serialTranslator module on this gateway, which verifies,
// uploads, tests, resets and confirms it over SMP, and follows its progress (contract in modules/common:
// schemas/edge-ota-mcu-flash-1.json). The translator owns the MCU's rollback (MCUboot reverts an unconfirmed
// image), so this handler's rollback only learns which version really runs. handlerProperties:
// `{ "version": "1.2.0+7" }` (the image header version; defaults to the update's version).

export type InvokeModuleMethod = (moduleId: string, methodName: string, payload: unknown, timeoutSeconds: number) => Promise<{ status: number; payload: unknown }>;

interface Waiter {
  resolve: (progress: McuFlashProgress) => void;
  onProgress: (progress: McuFlashProgress) => void;
}

export class McuHandler implements UpdateHandler {
  readonly ids = ['edge-ota/mcu:1'];
  readonly needsLocalFiles = false;
  readonly #invoke: InvokeModuleMethod;
  readonly #translatorModule: string;
  readonly #statusPollMs: number;
  readonly #waiters = new Map<string, Waiter>();
  readonly #lastProgress = new Map<string, McuFlashProgress>();

  constructor(options: { invoke: InvokeModuleMethod; translatorModule?: string; statusPollMs?: number }) {
    this.#invoke = options.invoke;
    this.#translatorModule = options.translatorModule ?? 'serialTranslator';
    this.#statusPollMs = options.statusPollMs ?? 15_000;
  }

  /** Feeds a message from the `mcuProgress` input; malformed ones are ignored (and said so). */
  progressReceived(body: Buffer, log: (line: string) => void): void {
    let progress: McuFlashProgress;
    try {
      progress = parseMcuFlashProgress(JSON.parse(body.toString('utf8')));
    } catch (error) {
      log(`ignored a malformed mcuProgress message: ${(error as Error).message}`);
      return;
    }
    this.#lastProgress.set(progress.jobId, progress);
    const waiter = this.#waiters.get(progress.jobId);
    waiter?.onProgress(progress);
    if (waiter && isFinalFlashStatus(progress.status)) waiter.resolve(progress);
  }

  isInstalled(): Promise<boolean> {
    // The translator skips a flash whose image already runs confirmed; asking first would cost a serial round trip.
    return Promise.resolve(false);
  }

  async install(context: StepContext): Promise<PhaseOutcome> {
    const file = context.files[0];
    if (!file || context.files.length !== 1) return failed(new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: an MCU step carries exactly one image file`));
    const url = file.urls[0];
    if (!url) return failed(new OtaError('INSTALL_FAILED', `no URL for image ${file.fileName}`));
    const version = typeof context.step.handlerProperties?.version === 'string' ? context.step.handlerProperties.version : context.updateId.version;
    const request: McuFlashRequest = {
      schema: MCU_FLASH_SCHEMA,
      jobId: context.job.jobId,
      mcuId: context.job.targetId,
      image: { url, sha256: file.sha256, sizeInBytes: file.sizeInBytes, version },
    };
    try {
      // After a restart the flash may be running or finished already: ask before starting it again.
      const known = context.resumed ? await this.#status(context.job.jobId) : undefined;
      if (!known) {
        const reply = await this.#invoke(this.#translatorModule, FLASH_FIRMWARE_METHOD, request, 30);
        if (reply.status >= 300) {
          const details = JSON.stringify(reply.payload);
          return failed(new OtaError('INSTALL_FAILED', `${this.#translatorModule} refused the flash (HTTP ${reply.status}): ${details}`));
        }
        context.log(`flash of ${context.job.targetId} to ${version} accepted by ${this.#translatorModule}`);
      }
      const final = known && isFinalFlashStatus(known.status) ? known : await this.#waitForEnd(context);
      return outcomeOf(final);
    } catch (error) {
      return failed(error instanceof OtaError ? error : new OtaError('MCU_TRANSPORT_ERROR', `${this.#translatorModule}: ${(error as Error).message}`, { cause: error }));
    }
  }

  apply(): Promise<PhaseOutcome> {
    return Promise.resolve(done());
  }

  async rollback(context: StepContext): Promise<PhaseOutcome> {
    const last = this.#lastProgress.get(context.job.jobId) ?? (await this.#status(context.job.jobId).catch(() => undefined));
    return done(last?.runningVersion);
  }

  async #status(jobId: string): Promise<McuFlashProgress | undefined> {
    const reply = await this.#invoke(this.#translatorModule, GET_FLASH_STATUS_METHOD, { jobId }, 30);
    if (reply.status === 404) return undefined;
    if (reply.status >= 300) throw new OtaError('MCU_TRANSPORT_ERROR', `${GET_FLASH_STATUS_METHOD} answered HTTP ${reply.status}`);
    const progress = parseMcuFlashProgress(reply.payload);
    this.#lastProgress.set(jobId, progress);
    return progress;
  }

  /** Waits for the final progress message, polling getFlashStatus in case a message was lost. */
  #waitForEnd(context: StepContext): Promise<McuFlashProgress> {
    const jobId = context.job.jobId;
    return new Promise<McuFlashProgress>((resolve, reject) => {
      let lastLoggedPhase = '';
      const finish = (progress: McuFlashProgress): void => {
        clearInterval(poll);
        this.#waiters.delete(jobId);
        resolve(progress);
      };
      const poll = setInterval(() => {
        this.#status(jobId).then(
          (progress) => {
            if (progress && isFinalFlashStatus(progress.status)) finish(progress);
          },
          (error: unknown) => context.log(`flash status poll failed: ${(error as Error).message}`),
        );
      }, this.#statusPollMs);
      this.#waiters.set(jobId, {
        resolve: finish,
        onProgress: (progress) => {
          if (progress.phase !== lastLoggedPhase) {
            lastLoggedPhase = progress.phase;
            context.log(`mcu ${progress.mcuId}: ${progress.phase} ${progress.bytesSent ?? ''}/${progress.totalBytes ?? ''}`);
          }
        },
      });
      context.signal.addEventListener('abort', () => {
        clearInterval(poll);
        this.#waiters.delete(jobId);
        reject(context.signal.reason as Error);
      }, { once: true });
    });
  }
}

function outcomeOf(progress: McuFlashProgress): PhaseOutcome {
  if (progress.status === 'succeeded') return done(progress.runningVersion);
  // Keep the translator's own code (SMP timeout, image signature, ...) when it is one of the table's.
  const reported = progress.extendedResultCode ? describeExtendedResultCode(progress.extendedResultCode) : undefined;
  const code = (reported?.name as ResultCodeName | undefined) ?? (progress.status === 'rolledBack' ? 'MCU_IMAGE_NOT_CONFIRMED' : 'INSTALL_FAILED');
  return failed(new OtaError(code, `MCU flash ${progress.status} in ${progress.phase}: ${progress.resultDetails ?? ''}`.trim()));
}
