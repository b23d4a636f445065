import {
  OtaError,
  checkUpdatePolicy,
  formatUpdateId,
  isDetachedManifestPointer,
  isOtaError,
  parseUpdateDelivery,
  parseUpdateManifest,
  resultCodes,
  verifyUpdateManifest,
  WORKFLOW_CANCEL,
} from '@edge-ota/common';
import type { ApplyUpdateReply, FullUpdateManifest, ResultCodeName, TrustStore, UpdateDelivery, UpdateManifest } from '@edge-ota/common';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { ArtifactDownloader, ArtifactSource } from './artifactDownloader.ts';
import type { FaultInjection } from './faultInjection.ts';
import { hashFile } from './fileHash.ts';
import type { JobEvent, JobState } from './jobStates.ts';
import { feedbackStepOf, isTerminal, maxStateEntries, nextState } from './jobStates.ts';
import type { FeedbackDraft, JobSource, JobStore, StepPhase, UpdateJob } from './jobStore.ts';
import type { HandlerRegistry, PhaseOutcome, StepContext, StepFile, UpdateHandler } from './handlers/updateHandler.ts';
import type { ExpandedStep, ExpandedSteps, JobFile } from './stepExpansion.ts';
import { expandSteps, selectForTarget } from './stepExpansion.ts';

// Drives update jobs through the transition table. For each job: persist the state, run that state's action,
// persist the next state together with the feedback it produces, repeat. On start-up every unfinished job is
// resumed from the state it was in, which counts as entering that state again (capped by maxStateEntries).

export interface TargetProperties {
  /** Compatibility properties (deviceManufacturer, deviceModel, ...). */
  properties: Record<string, string>;
}

export interface Rebooter {
  /** Restarts the target (the gateway). Does not return in production; a test rebooter ends the process. */
  reboot(reason: string): Promise<void>;
}

export interface UpdateEngineOptions {
  store: JobStore;
  trustStore: TrustStore;
  handlers: HandlerRegistry;
  downloader: ArtifactDownloader;
  /** Volume directory for downloads and handler scratch space. */
  dataDir: string;
  gatewayId: string;
  /** Compatibility properties of a target, or undefined when this gateway does not serve it. */
  targetProperties: (targetId: string) => TargetProperties | undefined;
  /** Where to fetch a file from, in preference order (the content cache first, then the origin URL). */
  artifactSources: (originUrl: string, sha256Hex: string) => ArtifactSource[];
  rebooter: Rebooter;
  faults: FaultInjection;
  allowManifestsWithoutLifetime?: boolean;
  /** Called after feedback was queued, so the outbox can send it. */
  onFeedback?: () => void;
  /** Called after every state change (reported properties). */
  onJobChanged?: (job: UpdateJob) => void;
  log?: (line: string) => void;
  now?: () => Date;
}

interface ActionResult {
  event: JobEvent;
  error?: OtaError;
  installedVersion?: string;
  /** Success code to report for the step (e.g. INSTALL_SKIPPED_ALREADY_INSTALLED). */
  successCode?: ResultCodeName;
}

interface LoadedJob {
  manifest: FullUpdateManifest;
  /** The manifest's steps with each reference step replaced by its child's steps, and the files of all of them. */
  expanded: ExpandedSteps;
}

/** A step that applies to the job's target, with the handler that runs it. */
interface RunnableStep {
  planned: ExpandedStep;
  handler: UpdateHandler;
}

const cancellableStates: ReadonlySet<JobState> = new Set(['accepted', 'verifying', 'downloading', 'validating']);

export class UpdateEngine {
  readonly #options: UpdateEngineOptions;
  readonly #log: (line: string) => void;
  readonly #running = new Map<string, { jobId: string; controller: AbortController; done: Promise<void> }>();
  readonly #loaded = new Map<string, LoadedJob>();
  /** Jobs whose current state was entered by this process (not resumed after a restart). */
  readonly #enteredHere = new Set<string>();
  /** Jobs this process asked to reboot for: they wait for the next start, never run again here. */
  readonly #awaitingReboot = new Set<string>();
  readonly #rebootAfterRollback = new Set<string>();
  #stopped = false;

  constructor(options: UpdateEngineOptions) {
    this.#options = options;
    this.#log = options.log ?? (() => undefined);
  }

  /** Resumes every unfinished job (call once at start-up). */
  start(): void {
    for (const job of this.#options.store.activeJobs()) {
      this.#log(`resuming job ${job.jobId} for ${job.targetId} in state ${job.state}`);
    }
    this.#schedule();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const run of this.#running.values()) run.controller.abort(new Error('orchestrator stopping'));
    await Promise.allSettled([...this.#running.values()].map((r) => r.done));
  }

  /** Waits until no job is running (tests and graceful shutdown). */
  async idle(): Promise<void> {
    while (this.#running.size > 0) await Promise.allSettled([...this.#running.values()].map((r) => r.done));
  }

  /**
   * Takes a delivery from the dispatcher (method, twin) or a bundle. The manifest signature is checked before
   * anything is stored, so an unauthenticated request cannot occupy a job id or a manifest id.
   */
  submit(input: unknown, source: JobSource): ApplyUpdateReply {
    let delivery: UpdateDelivery;
    try {
      delivery = parseUpdateDelivery(input);
    } catch (error) {
      return rejected(typeof (input as { workflow?: { id?: unknown } })?.workflow?.id === 'string' ? String((input as { workflow: { id: string } }).workflow.id) : '', error);
    }
    const jobId = delivery.workflow.id;
    if (delivery.workflow.action === WORKFLOW_CANCEL) return this.cancel(jobId);
    const targetId = delivery.target?.deviceId ?? this.#options.gatewayId;
    if (!this.#options.targetProperties(targetId)) {
      return rejected(jobId, new OtaError('INCOMPATIBLE_DEVICE', `target ${targetId} is not served by gateway ${this.#options.gatewayId}`));
    }
    let manifest: UpdateManifest;
    try {
      manifest = verifyUpdateManifest(delivery.updateManifest, delivery.updateManifestSignature, this.#options.trustStore).manifest;
    } catch (error) {
      return rejected(jobId, error);
    }
    const inserted = this.#options.store.insertJob({
      jobId,
      gatewayId: this.#options.gatewayId,
      targetId,
      delivery,
      updateId: manifest.updateId,
      manifestId: manifest.edgeOta?.manifestId,
      source,
    });
    if (inserted.status === 'replayed') {
      return rejected(jobId, new OtaError('MANIFEST_REPLAYED', `manifest ${manifest.edgeOta?.manifestId ?? ''} was already used by job ${inserted.otherJobId}`));
    }
    if (inserted.status === 'duplicate') return { jobId, accepted: true, disposition: 'duplicate' };
    this.#options.store.appendFeedback(jobId, { step: 'job', status: 'started', resultCode: 0, extendedResultCode: 0 });
    this.#enteredHere.add(jobId);
    this.#options.onFeedback?.();
    this.#options.onJobChanged?.(inserted.job);
    this.#schedule();
    return { jobId, accepted: true, disposition: 'queued' };
  }

  cancel(jobId: string): ApplyUpdateReply {
    const job = this.#options.store.getJob(jobId);
    if (!job) return rejected(jobId, new OtaError('CANCELLED', `no job ${jobId} to cancel`));
    if (isTerminal(job.state)) return { jobId, accepted: false, disposition: 'duplicate', resultDetails: `job already ${job.state}` };
    this.#options.store.requestCancel(jobId);
    const running = [...this.#running.values()].find((r) => r.jobId === jobId);
    if (running && cancellableStates.has(job.state)) running.controller.abort(new OtaError('CANCELLED', `job ${jobId} cancelled`));
    this.#schedule();
    return { jobId, accepted: true, disposition: 'cancelling' };
  }

  /** One job at a time per target, oldest first; different targets in parallel. */
  #schedule(): void {
    if (this.#stopped) return;
    for (const job of this.#options.store.activeJobs()) {
      if (this.#running.has(job.targetId) || this.#awaitingReboot.has(job.jobId)) continue;
      const controller = new AbortController();
      const done = this.#run(job.jobId, controller.signal)
        .catch((error: unknown) => this.#log(`job ${job.jobId} stopped: ${(error as Error).message}`))
        .finally(() => {
          this.#running.delete(job.targetId);
          this.#schedule();
        });
      this.#running.set(job.targetId, { jobId: job.jobId, controller, done });
    }
  }

  async #run(jobId: string, signal: AbortSignal): Promise<void> {
    const { store, faults } = this.#options;
    let job = store.getJob(jobId);
    if (!job) return;
    if (!this.#enteredHere.has(jobId) && !isTerminal(job.state)) {
      // Restarted in the middle of this state: entering it again counts toward the cap.
      job = store.reenter(jobId, job.state) ?? job;
    }
    while (job && !isTerminal(job.state)) {
      if (this.#stopped) return;
      const state: JobState = job.state;
      const resumed = !this.#enteredHere.has(jobId);
      faults.checkpoint(`enter:${state}`);
      if (state === 'awaitingReboot' && !resumed) {
        // The job waits here, persisted; the next start of the process confirms the boot. A rebooter that returns
        // (a test, or a reboot that is slow to happen) must not make this process run the job again.
        this.#awaitingReboot.add(jobId);
        await this.#options.rebooter.reboot(`job ${jobId} applied an update that needs a reboot`);
        return;
      }
      let result: ActionResult;
      if ((job.stateEntries[state] ?? 0) > maxStateEntries) {
        result = { event: 'fail', error: new OtaError('JOB_STATE_LOOP', `state ${state} was entered ${job.stateEntries[state]} times; giving up to avoid a loop`) };
      } else if (job.cancelRequested && cancellableStates.has(state)) {
        result = { event: 'cancel', error: new OtaError('CANCELLED', `job ${jobId} cancelled`) };
      } else {
        result = await this.#act(state, job, signal, resumed);
      }
      if (this.#stopped && !isTerminal(state) && result.event !== 'ok') return;
      faults.checkpoint(`leave:${state}`);
      const next = this.#next(job, state, result.event);
      const feedback = this.#feedbackFor(job, state, next, result);
      const error = result.error;
      // Only a failure writes the job's result, so a rollback that succeeds keeps the reason it was needed.
      const updated = store.transition(jobId, state, next, feedback, {
        ...(error ? { resultCode: error.resultCode, extendedResultCode: error.extendedResultCode, resultDetails: `${error.code}: ${error.message}` } : {}),
        installedVersion: result.installedVersion,
      });
      if (!updated) return;
      this.#enteredHere.add(jobId);
      job = updated;
      this.#log(`job ${jobId}: ${state} --${result.event}--> ${next}${error ? ` (${error.code}: ${error.message})` : ''}`);
      this.#options.onFeedback?.();
      this.#options.onJobChanged?.(job);
    }
    if (job && isTerminal(job.state)) {
      this.#loaded.delete(jobId);
      this.#enteredHere.delete(jobId);
      await rm(this.#jobDir(jobId), { recursive: true, force: true });
      if (this.#rebootAfterRollback.delete(jobId)) {
        // The rollback is recorded (and its feedback queued) before the target restarts into the old software. The
        // job is over, so nothing waits for the reboot to happen.
        this.#options.rebooter
          .reboot(`job ${jobId} rolled back to software that needs a reboot to run`)
          .catch((error: unknown) => this.#log(`reboot after the rollback of ${jobId} failed: ${(error as Error).message}`));
      }
    }
  }

  /** The table's next state, with the re-entry cap turning a loop into the failure path. */
  #next(job: UpdateJob, state: JobState, event: JobEvent): JobState {
    const next = nextState(state, event);
    if (isTerminal(next) || (job.stateEntries[next] ?? 0) < maxStateEntries) return next;
    this.#log(`job ${job.jobId}: ${next} already entered ${job.stateEntries[next]} times`);
    return next === 'rollingBack' || next === 'cleaningUp' || next === 'cancelling' ? 'failed' : nextState(state, 'fail');
  }

  #feedbackFor(job: UpdateJob, left: JobState, entered: JobState, result: ActionResult): FeedbackDraft[] {
    const drafts: FeedbackDraft[] = [];
    const leftStep = feedbackStepOf[left];
    // `accepted` and the cleanup states are bookkeeping, not steps a user follows; an apply that needs a reboot
    // is reported once, when the boot is confirmed (awaitingReboot reports as the apply step).
    if (leftStep !== 'job' && result.event !== 'reboot') {
      const success = result.successCode ? resultCodes[result.successCode] : resultCodes.SUCCESS;
      drafts.push(
        result.error
          ? {
              step: leftStep,
              status: result.event === 'cancel' ? 'cancelled' : 'failed',
              resultCode: result.error.resultCode,
              extendedResultCode: result.error.extendedResultCode,
              resultDetails: result.error.message,
            }
          : {
              step: leftStep,
              status: result.event === 'skip' ? 'skipped' : 'succeeded',
              resultCode: success.resultCode,
              extendedResultCode: 0,
              installedVersion: result.installedVersion,
            },
      );
    }
    if (isTerminal(entered)) {
      const installed = this.#options.store.installed(job.targetId);
      const status = entered === 'succeeded' ? 'succeeded' : entered === 'rolledBack' ? 'rolledBack' : entered === 'cancelled' ? 'cancelled' : 'failed';
      // The job's outcome carries the failure that decided it: this step's, or the one recorded earlier.
      const failure = result.error
        ? { extendedResultCode: result.error.extendedResultCode, details: `${result.error.code}: ${result.error.message}` }
        : job.extendedResultCode
          ? { extendedResultCode: job.extendedResultCode, details: job.resultDetails }
          : undefined;
      drafts.push({
        step: 'job',
        status,
        resultCode: entered === 'succeeded' ? (result.successCode ? resultCodes[result.successCode].resultCode : 1) : 0,
        extendedResultCode: entered === 'succeeded' ? 0 : (failure?.extendedResultCode ?? 0),
        resultDetails: entered === 'succeeded' ? undefined : failure?.details,
        installedVersion: result.installedVersion ?? installed?.version,
      });
    } else if (feedbackStepOf[entered] !== 'job' && feedbackStepOf[entered] !== feedbackStepOf[left]) {
      drafts.push({ step: feedbackStepOf[entered], status: 'started', resultCode: 0, extendedResultCode: 0 });
    }
    return drafts;
  }

  async #act(state: JobState, job: UpdateJob, signal: AbortSignal, resumed: boolean): Promise<ActionResult> {
    try {
      switch (state) {
        case 'accepted':
          return { event: 'ok' };
        case 'verifying':
          return await this.#verify(job, signal);
        case 'downloading':
          return await this.#download(job, signal);
        case 'validating':
          return await this.#validate(job, signal);
        case 'installing':
          return await this.#eachStep(job, 'install', signal, resumed);
        case 'applying':
          return await this.#eachStep(job, 'apply', signal, resumed);
        case 'awaitingReboot':
          return await this.#eachStep(job, 'confirmBoot', signal, resumed);
        case 'running':
          return await this.#eachStep(job, 'run', signal, resumed);
        case 'healthChecking':
          return await this.#eachStep(job, 'healthCheck', signal, resumed);
        case 'committing': {
          const result = await this.#eachStep(job, 'commit', signal, resumed);
          if (result.event === 'ok') {
            const { manifest } = await this.#load(job, signal);
            this.#options.store.recordInstalled({ targetId: job.targetId, updateId: manifest.updateId, version: manifest.updateId.version, source: job.source });
            return { ...result, installedVersion: result.installedVersion ?? manifest.updateId.version };
          }
          return result;
        }
        case 'rollingBack':
          return await this.#rollback(job, signal, resumed);
        case 'cleaningUp':
        case 'cancelling':
          await rm(this.#jobDir(job.jobId), { recursive: true, force: true });
          return { event: 'ok' };
        default:
          throw new Error(`no action for state ${state}`);
      }
    } catch (error) {
      if (signal.aborted && isOtaError(signal.reason, 'CANCELLED')) return { event: 'cancel', error: signal.reason };
      if (this.#stopped) return { event: 'fail', error: new OtaError('JOB_TIMEOUT', 'orchestrator stopping') };
      return { event: 'fail', error: isOtaError(error) ? error : new OtaError('INSTALL_FAILED', (error as Error).message, { cause: error }) };
    }
  }

  #jobDir(jobId: string): string {
    return path.join(this.#options.dataDir, 'jobs', createHash('sha256').update(jobId).digest('hex').slice(0, 32));
  }

  /**
   * Verifies the chain and, for a detached pointer, fetches and checks the full manifest; then expands reference
   * steps (fetching and checking their child manifests). Cached per job; after a restart everything is read and
   * checked again, from the copies kept in the job directory.
   */
  async #load(job: UpdateJob, signal: AbortSignal): Promise<LoadedJob> {
    const cached = this.#loaded.get(job.jobId);
    if (cached) return cached;
    const { delivery } = job;
    const verified = verifyUpdateManifest(delivery.updateManifest, delivery.updateManifestSignature, this.#options.trustStore);
    let manifest: UpdateManifest = verified.manifest;
    if (isDetachedManifestPointer(manifest)) {
      const entry = manifest.files[manifest.detachedManifestFileId];
      const url = delivery.fileUrls[manifest.detachedManifestFileId];
      if (!entry || !url) throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `detached manifest ${manifest.detachedManifestFileId} has no file entry or URL`);
      const file = path.join(this.#jobDir(job.jobId), 'manifest', 'detached.json');
      await this.#fetch(url, entry.hashes.sha256, entry.sizeInBytes, file, signal);
      const full = parseUpdateManifest(await readFile(file));
      if (isDetachedManifestPointer(full)) throw new OtaError('UPDATE_MANIFEST_INVALID', 'a detached manifest points to another detached manifest');
      manifest = { ...full, edgeOta: full.edgeOta ?? verified.manifest.edgeOta };
    }
    const full = manifest;
    const expanded = await expandSteps(full, {
      jobDir: this.#jobDir(job.jobId),
      fileUrls: delivery.fileUrls,
      fetch: (url, file, destination) => this.#fetch(url, file.hashes.sha256, file.sizeInBytes, destination, signal),
    });
    const loaded = { manifest: full, expanded };
    this.#loaded.set(job.jobId, loaded);
    return loaded;
  }

  /**
   * The steps that apply to the target, in order, with their handlers. The children of reference steps apply as
   * `#selectChildren` recorded in verifying; the manifest's own steps always apply.
   */
  #runnableSteps(job: UpdateJob, loaded: LoadedJob): RunnableStep[] {
    return loaded.expanded.steps
      .filter((planned) => planned.child === undefined || this.#options.store.stepSelection(job.jobId, planned.index) !== false)
      .map((planned) => {
        const handler = this.#options.handlers.find(planned.step.handler);
        if (!handler) {
          throw new OtaError('INSTALL_HANDLER_UNKNOWN', `${planned.pointer}/handler: no handler ${planned.step.handler} here (have ${this.#options.handlers.ids().join(', ')})`);
        }
        return { planned, handler };
      });
  }

  /**
   * Decides, once per entry into verifying, which children of reference steps are for the target
   * (`selectForTarget`: ADU's behaviour with the target as the only component) and records it for every later
   * state. A child that is not for the target is skipped and named in the job log.
   */
  #selectChildren(job: UpdateJob, loaded: LoadedJob, targetProperties: Readonly<Record<string, string>>): void {
    const { store } = this.#options;
    for (const child of loaded.expanded.children) {
      const selection = selectForTarget(child, targetProperties);
      for (const index of child.stepIndexes) store.recordStepSelection(job.jobId, index, selection.applies);
      if (!selection.applies) {
        const line = `reference step ${child.manifestStep} (${formatUpdateId(child.manifest.updateId)}) is not for ${job.targetId}: its steps ` +
          `${child.stepIndexes.join(', ')} are skipped and count as installed (ADU: no matching components, 604); ${selection.reason}`;
        store.log(job.jobId, line);
        this.#log(`job ${job.jobId}: ${line}`);
      }
    }
  }

  async #verify(job: UpdateJob, signal: AbortSignal): Promise<ActionResult> {
    const loaded = await this.#load(job, signal);
    const target = this.#options.targetProperties(job.targetId);
    if (!target) throw new OtaError('INCOMPATIBLE_DEVICE', `target ${job.targetId} is no longer served by this gateway`);
    const installed = this.#options.store.installed(job.targetId);
    checkUpdatePolicy(loaded.manifest, {
      properties: target.properties,
      ...(installed && installed.updateId.provider === loaded.manifest.updateId.provider && installed.updateId.name === loaded.manifest.updateId.name
        ? { installedVersion: installed.version }
        : {}),
    }, { now: this.#options.now?.() ?? new Date(), allowManifestsWithoutLifetime: this.#options.allowManifestsWithoutLifetime ?? false });
    this.#selectChildren(job, loaded, target.properties);
    const steps = this.#runnableSteps(job, loaded);
    // installedCriteria (ADU's IsInstalled, see common/policy/installedCriteria.ts): the update is there when every
    // manifest step is. A reference step is judged by its child's steps, all installed, and a child that is not for
    // this target counts as installed, as ADU's steps handler answers for an optional step. Over the expanded steps
    // that is: every step that applies is installed. Then the job succeeds without touching anything.
    let everyStepInstalled = true;
    for (const runnable of steps) {
      if (!(await runnable.handler.isInstalled(await this.#context(job, loaded, runnable, signal, false)))) {
        everyStepInstalled = false;
        break;
      }
    }
    if (loaded.manifest.instructions.steps.length > 0 && everyStepInstalled) {
      this.#options.store.recordInstalled({ targetId: job.targetId, updateId: loaded.manifest.updateId, version: loaded.manifest.updateId.version, source: job.source });
      return { event: 'skip', successCode: 'INSTALL_SKIPPED_ALREADY_INSTALLED', installedVersion: loaded.manifest.updateId.version };
    }
    // Every file a step that applies will need has a source, before a byte is downloaded.
    for (const { planned } of steps) {
      for (const fileId of planned.step.files) {
        if (!job.delivery.fileUrls[fileId]) {
          throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${planned.pointer}/files: no download URL for file ${fileId} in fileUrls`, { field: planned.pointer });
        }
      }
    }
    return { event: 'ok' };
  }

  /** Files of the steps whose handlers install local files, each once. */
  #localFiles(job: UpdateJob, loaded: LoadedJob): Map<string, JobFile> {
    const files = new Map<string, JobFile>();
    for (const { planned, handler } of this.#runnableSteps(job, loaded)) {
      if (!handler.needsLocalFiles) continue;
      for (const fileId of planned.step.files) files.set(fileId, jobFile(loaded, planned, fileId));
    }
    return files;
  }

  async #download(job: UpdateJob, signal: AbortSignal): Promise<ActionResult> {
    const loaded = await this.#load(job, signal);
    const files = [...this.#localFiles(job, loaded).values()];
    const total = files.reduce((sum, f) => sum + f.entry.sizeInBytes, 0);
    let finishedBytes = 0;
    let lastReportedDecile = -1;
    for (const { fileId, entry, path: destination } of files) {
      const url = job.delivery.fileUrls[fileId];
      if (!url) throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `no download URL for file ${fileId}`);
      const before = finishedBytes;
      await this.#fetch(url, entry.hashes.sha256, entry.sizeInBytes, destination, signal, (doneBytes) => {
        // Progress feedback at most every 10% of the job's bytes: enough to follow, little to send.
        const decile = total === 0 ? 10 : Math.floor(((before + doneBytes) * 10) / total);
        if (decile > lastReportedDecile && decile < 10) {
          lastReportedDecile = decile;
          this.#options.store.appendFeedback(job.jobId, {
            step: 'download',
            status: 'progress',
            resultCode: 0,
            extendedResultCode: 0,
            progress: { doneBytes: before + doneBytes, totalBytes: total, fileId },
          });
          this.#options.onFeedback?.();
        }
      });
      finishedBytes += entry.sizeInBytes;
      this.#options.store.recordFileProgress(job.jobId, fileId, entry.sizeInBytes, true);
    }
    return { event: 'ok', successCode: 'DOWNLOAD_SUCCEEDED' };
  }

  async #fetch(originUrl: string, sha256: string, size: number, destination: string, signal: AbortSignal, onProgress?: (done: number) => void): Promise<void> {
    const hex = Buffer.from(sha256, 'base64').toString('hex');
    await this.#options.downloader.download({
      sources: this.#options.artifactSources(originUrl, hex),
      sha256,
      sizeInBytes: size,
      destination,
      signal,
      ...(onProgress ? { onProgress } : {}),
    });
  }

  /** Re-checks every downloaded file against the signed hash, then lets handlers check their content. */
  async #validate(job: UpdateJob, signal: AbortSignal): Promise<ActionResult> {
    const loaded = await this.#load(job, signal);
    for (const { entry, path: file } of this.#localFiles(job, loaded).values()) {
      const hash = createHash('sha256');
      let size: number;
      try {
        size = await hashFile(file, hash);
      } catch (error) {
        throw new OtaError('DOWNLOAD_STORAGE_ERROR', `${entry.filename}: cannot read the downloaded file: ${(error as Error).message}`, { cause: error });
      }
      if (size !== entry.sizeInBytes || hash.digest('base64') !== entry.hashes.sha256) {
        throw new OtaError('DOWNLOAD_HASH_MISMATCH', `${entry.filename}: the file on disk no longer matches its signed sha256`);
      }
    }
    for (const runnable of this.#runnableSteps(job, loaded)) {
      if (!runnable.handler.validate) continue;
      const outcome = await runnable.handler.validate(await this.#context(job, loaded, runnable, signal, false));
      if (outcome.kind === 'failed') return { event: 'fail', error: outcome.error };
    }
    return { event: 'ok' };
  }

  async #context(job: UpdateJob, loaded: LoadedJob, { planned, handler }: RunnableStep, signal: AbortSignal, resumed: boolean): Promise<StepContext> {
    const workDir = path.join(this.#jobDir(job.jobId), 'work', String(planned.index));
    await mkdir(workDir, { recursive: true });
    const files: StepFile[] = planned.step.files.map((fileId) => {
      const { entry, path: local } = jobFile(loaded, planned, fileId);
      const origin = job.delivery.fileUrls[fileId];
      const hex = Buffer.from(entry.hashes.sha256, 'base64').toString('hex');
      return {
        fileId,
        fileName: entry.filename,
        sizeInBytes: entry.sizeInBytes,
        sha256: entry.hashes.sha256,
        path: handler.needsLocalFiles ? local : undefined,
        urls: origin ? this.#options.artifactSources(origin, hex).map((s) => s.url) : [],
        manifestEntry: entry,
      };
    });
    return {
      job,
      step: planned.step,
      // The job's own update for the manifest's steps (as before reference steps existed), the child's for its steps.
      updateId: planned.child ? planned.updateId : job.updateId,
      stepIndex: planned.index,
      files,
      workDir,
      signal,
      resumed,
      log: (line) => this.#options.store.log(job.jobId, `${planned.label}: ${line}`),
    };
  }

  /**
   * Runs one phase over every step, in order. A step whose phase is recorded as done is skipped, so a restart
   * never repeats it; a step recorded as started but not done was interrupted and is run again as `resumed`; a
   * step recorded as failed is not run again, its recorded failure decides.
   */
  async #eachStep(job: UpdateJob, phase: Exclude<StepPhase, 'rollback'>, signal: AbortSignal, resumedState: boolean): Promise<ActionResult> {
    const loaded = await this.#load(job, signal);
    const { store, faults } = this.#options;
    let installedVersion: string | undefined;
    for (const runnable of this.#runnableSteps(job, loaded)) {
      const { planned: { index }, handler } = runnable;
      const status = store.stepPhase(job.jobId, index, phase);
      if (status === 'done' || status === 'skipped') continue;
      if (status === 'failed') return { event: 'fail', error: this.#recordedFailure(job, index, phase) };
      if (phase === 'install' && status === 'none') {
        const context = await this.#context(job, loaded, runnable, signal, false);
        if (await handler.isInstalled(context)) {
          store.markStepPhase(job.jobId, index, 'install', 'skipped');
          continue;
        }
      }
      // A step skipped at install (already there) has nothing to apply, run or confirm.
      if (phase !== 'install' && store.stepPhase(job.jobId, index, 'install') === 'skipped') continue;
      const method = phaseMethod(handler, phase);
      if (!method) {
        store.markStepPhase(job.jobId, index, phase, 'done');
        continue;
      }
      store.markStepPhase(job.jobId, index, phase, 'started');
      faults.checkpoint(`start:${phase}:${index}`);
      const context = await this.#context(job, loaded, runnable, signal, resumedState && status === 'started');
      const outcome: PhaseOutcome = await method(context);
      if (outcome.kind === 'failed') return this.#stepFailed(job, index, phase, outcome.error);
      if (outcome.kind === 'reboot') {
        // The reboot finishes the apply phase of this step; the boot is confirmed on start-up.
        store.markStepPhase(job.jobId, index, phase, 'done');
        faults.checkpoint(`done:${phase}:${index}`);
        return { event: 'reboot' };
      }
      store.markStepPhase(job.jobId, index, phase, 'done');
      faults.checkpoint(`done:${phase}:${index}`);
      if (outcome.installedVersion) installedVersion = outcome.installedVersion;
    }
    return installedVersion ? { event: 'ok', installedVersion } : { event: 'ok' };
  }

  /**
   * A handler's failure is recorded before the job's state changes: a crash between the two must not run the step
   * again (its side effects, whatever they were, happened once), so the restart reads the verdict instead.
   */
  #stepFailed(job: UpdateJob, index: number, phase: StepPhase, error: OtaError): ActionResult {
    this.#options.store.recordStepFailure(job.jobId, index, phase, { code: error.code, message: error.message });
    this.#options.faults.checkpoint(`failed:${phase}:${index}`);
    return { event: 'fail', error };
  }

  #recordedFailure(job: UpdateJob, index: number, phase: StepPhase): OtaError {
    const failure = this.#options.store.stepFailure(job.jobId, index, phase);
    const fallback = phase === 'rollback' ? 'ROLLBACK_FAILED' : 'INSTALL_FAILED';
    const code = failure && failure.code in resultCodes ? (failure.code as ResultCodeName) : fallback;
    return new OtaError(code, failure?.message ?? `step ${index} ${phase} was recorded as failed before a restart`);
  }

  /** Rolls back, newest step first, every step whose install started; reports the version really running. */
  async #rollback(job: UpdateJob, signal: AbortSignal, resumedState: boolean): Promise<ActionResult> {
    let loaded: LoadedJob;
    let steps: RunnableStep[];
    try {
      loaded = await this.#load(job, signal);
      steps = this.#runnableSteps(job, loaded);
    } catch (error) {
      // Nothing could have been installed from a manifest that no longer loads.
      return { event: 'fail', error: isOtaError(error) ? error : new OtaError('ROLLBACK_FAILED', (error as Error).message) };
    }
    const { store, faults } = this.#options;
    let runningVersion: string | undefined;
    for (const runnable of [...steps].reverse()) {
      const { planned: { index }, handler } = runnable;
      const install = store.stepPhase(job.jobId, index, 'install');
      if (install === 'none' || install === 'skipped') continue;
      const status = store.stepPhase(job.jobId, index, 'rollback');
      if (status === 'done') continue;
      if (status === 'failed') return { event: 'fail', error: this.#recordedFailure(job, index, 'rollback') };
      store.markStepPhase(job.jobId, index, 'rollback', 'started');
      faults.checkpoint(`start:rollback:${index}`);
      const outcome = await handler.rollback(await this.#context(job, loaded, runnable, signal, resumedState && status === 'started'));
      if (outcome.kind === 'failed') return this.#stepFailed(job, index, 'rollback', outcome.error);
      if (outcome.kind === 'reboot') this.#rebootAfterRollback.add(job.jobId);
      store.markStepPhase(job.jobId, index, 'rollback', 'done');
      faults.checkpoint(`done:rollback:${index}`);
      if (outcome.installedVersion) runningVersion = outcome.installedVersion;
    }
    return { event: 'ok', installedVersion: runningVersion ?? store.installed(job.targetId)?.version };
  }
}

/** A file a step names, from the merged map of the manifest and its children. */
function jobFile(loaded: LoadedJob, planned: ExpandedStep, fileId: string): JobFile {
  const file = loaded.expanded.files.get(fileId);
  if (!file) throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${planned.label} names file ${fileId} that the manifest does not declare`);
  return file;
}

function phaseMethod(handler: UpdateHandler, phase: Exclude<StepPhase, 'rollback'>): ((context: StepContext) => Promise<PhaseOutcome>) | undefined {
  switch (phase) {
    case 'install':
      return handler.install.bind(handler);
    case 'apply':
      return handler.apply.bind(handler);
    case 'run':
      return handler.run?.bind(handler);
    case 'confirmBoot':
      return handler.confirmBoot?.bind(handler);
    case 'healthCheck':
      return handler.healthCheck?.bind(handler);
    case 'commit':
      return handler.commit?.bind(handler);
  }
}

function rejected(jobId: string, error: unknown): ApplyUpdateReply {
  const otaError = isOtaError(error) ? error : new OtaError('UPDATE_DELIVERY_INVALID', (error as Error).message);
  return {
    jobId,
    accepted: false,
    disposition: 'rejected',
    resultCode: otaError.resultCode,
    extendedResultCode: otaError.extendedResultCode,
    resultDetails: `${otaError.code}: ${otaError.message}`,
  };
}
