import type { InlineStep, OtaError, UpdateFile, UpdateId } from '@edge-ota/common';
import type { UpdateJob } from '../jobStore.ts';

// Every kind of update (file, script, apt, A/B image, MCU, process start, child gateway) sits behind this one
// interface, like Azure Device Update's content handlers. The engine calls the phases in order and persists
// what each returned before it calls the next, so a handler never sees a finished phase twice unless it said
// the phase is safe to repeat.

export interface StepFile {
  fileId: string;
  fileName: string;
  sizeInBytes: number;
  /** base64 sha256 from the signed manifest */
  sha256: string;
  /** Where the verified file is on disk (undefined for handlers that do not need local files). */
  path: string | undefined;
  /** URLs the file can be fetched from (content cache first), for handlers that pass them on. */
  urls: string[];
  manifestEntry: UpdateFile;
}

export interface StepContext {
  job: UpdateJob;
  step: InlineStep;
  /**
   * The update the step belongs to: the job's, or the child update's for a step of an ADU reference step (as ADU
   * hands such a step the child's workflow). Versions a handler records or compares come from here.
   */
  updateId: UpdateId;
  stepIndex: number;
  files: StepFile[];
  /** Scratch directory of this job and step, kept until the job ends. */
  workDir: string;
  signal: AbortSignal;
  log: (line: string) => void;
  /** True when this phase is being run again after the orchestrator restarted in the middle of it. */
  resumed: boolean;
}

/** What a phase reports. `reboot`: the target must restart before the next phase (A/B images). */
export type PhaseOutcome =
  | { kind: 'done'; installedVersion?: string }
  /** From rollback, `installedVersion` is what will run after the reboot. */
  | { kind: 'reboot'; installedVersion?: string }
  | { kind: 'failed'; error: OtaError };

export interface UpdateHandler {
  /** Handler ids this handler serves, as they appear in a step's `handler` field. */
  readonly ids: ReadonlyArray<string>;
  /** False for handlers that pass URLs on instead of installing local files (the MCU handler). */
  readonly needsLocalFiles: boolean;
  /** installedCriteria check: true skips the step (idempotency). */
  isInstalled(context: StepContext): Promise<boolean>;
  /** Checks before anything on the target changes (an apt dry run, an image header). Optional. */
  validate?(context: StepContext): Promise<PhaseOutcome>;
  install(context: StepContext): Promise<PhaseOutcome>;
  /** Activation; may ask for a reboot. */
  apply(context: StepContext): Promise<PhaseOutcome>;
  /** Starts what was installed (a process, a service). Optional. */
  run?(context: StepContext): Promise<PhaseOutcome>;
  /** After a reboot the engine asked for: is the target running the new software? */
  confirmBoot?(context: StepContext): Promise<PhaseOutcome>;
  healthCheck?(context: StepContext): Promise<PhaseOutcome>;
  /** Makes the update permanent (confirm an A/B slot). */
  commit?(context: StepContext): Promise<PhaseOutcome>;
  /** Undoes install/apply; must be safe to call after any of them, or twice. */
  rollback(context: StepContext): Promise<PhaseOutcome>;
}

export const done = (installedVersion?: string): PhaseOutcome => (installedVersion ? { kind: 'done', installedVersion } : { kind: 'done' });
export const failed = (error: OtaError): PhaseOutcome => ({ kind: 'failed', error });

/** Finds the handler for a step's `handler` id. */
export class HandlerRegistry {
  readonly #byId = new Map<string, UpdateHandler>();

  constructor(handlers: ReadonlyArray<UpdateHandler>) {
    for (const handler of handlers) for (const id of handler.ids) this.#byId.set(id.toLowerCase(), handler);
  }

  find(id: string): UpdateHandler | undefined {
    return this.#byId.get(id.toLowerCase());
  }

  ids(): string[] {
    return [...this.#byId.keys()].sort();
  }
}
