import type { JobStore, UpdateJob } from './jobStore.ts';
import type { ConfigurationProblem } from './configuration.ts';
import { isTerminal } from './jobStates.ts';
import type { UsbDropInResult } from './usbDropIn.ts';

// The module twin's reported properties: ADU's `deviceUpdate.agent` shape for the gateway's own updates (so ADU
// tooling can read it), and `edgeOta.targets` with one small entry per device this gateway updates. Changes are
// coalesced and sent at most every `intervalMs`; a failed report is retried, and the latest state always wins.

export const aduAgentStates = { idle: 0, deploymentInProgress: 6, failed: 255 } as const;
const maxTargetsReported = 100;

export type ReportProperties = (patch: Record<string, unknown>) => Promise<void>;

export class ReportedState {
  readonly #store: JobStore;
  readonly #report: ReportProperties;
  readonly #gatewayId: string;
  readonly #intervalMs: number;
  readonly #log: (line: string) => void;
  readonly #dirtyTargets = new Set<string>();
  #problems: ConfigurationProblem[] = [];
  #problemsDirty = false;
  #usb: (UsbDropInResult & { at: string }) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #sending: Promise<void> | undefined;
  #deviceProperties: Record<string, string>;

  constructor(options: { store: JobStore; report: ReportProperties; gatewayId: string; deviceProperties: Record<string, string>; intervalMs?: number; log?: (line: string) => void }) {
    this.#store = options.store;
    this.#report = options.report;
    this.#gatewayId = options.gatewayId;
    this.#deviceProperties = options.deviceProperties;
    this.#intervalMs = options.intervalMs ?? 500;
    this.#log = options.log ?? (() => undefined);
  }

  jobChanged(job: UpdateJob): void {
    this.#dirtyTargets.add(job.targetId);
    this.#schedule();
  }

  configurationChanged(deviceProperties: Record<string, string>, problems: ConfigurationProblem[]): void {
    this.#deviceProperties = deviceProperties;
    this.#problems = problems;
    this.#problemsDirty = true;
    this.#schedule();
  }

  /** The last bundle the USB drop-in looked at, so an operator sees a refused stick in the twin. */
  usbResult(result: UsbDropInResult): void {
    this.#usb = { ...result, at: new Date().toISOString() };
    this.#problemsDirty = true;
    this.#schedule();
  }

  /** Reports everything now (start-up, and the cloud coming back). */
  reportAll(): void {
    for (const record of this.#store.allInstalled()) this.#dirtyTargets.add(record.targetId);
    for (const job of this.#store.recentJobs(maxTargetsReported)) this.#dirtyTargets.add(job.targetId);
    this.#dirtyTargets.add(this.#gatewayId);
    this.#problemsDirty = true;
    this.#schedule(0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#sending;
  }

  #schedule(delay = this.#intervalMs): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#sending = this.#send().finally(() => {
        this.#sending = undefined;
      });
    }, delay);
  }

  async #send(): Promise<void> {
    const targets = [...this.#dirtyTargets].slice(0, maxTargetsReported);
    const problemsDirty = this.#problemsDirty;
    if (targets.length === 0 && !problemsDirty) return;
    for (const target of targets) this.#dirtyTargets.delete(target);
    this.#problemsDirty = false;
    const patch: Record<string, unknown> = {};
    const edgeOta: Record<string, unknown> = {};
    if (targets.length > 0) edgeOta.targets = Object.fromEntries(targets.map((t) => [t, this.#targetEntry(t)]));
    if (problemsDirty) {
      edgeOta.configurationErrors = this.#problems.length > 0 ? this.#problems.map((p) => `${p.setting}: ${p.message}`) : null;
      if (this.#usb) {
        edgeOta.usb = {
          bundle: this.#usb.bundle,
          status: this.#usb.status,
          jobIds: this.#usb.jobIds.join(','),
          extendedResultCode: this.#usb.extendedResultCode ?? null,
          details: this.#usb.details?.slice(0, 512) ?? null,
          at: this.#usb.at,
        };
      }
    }
    if (Object.keys(edgeOta).length > 0) patch.edgeOta = edgeOta;
    if (targets.includes(this.#gatewayId) || problemsDirty) patch.deviceUpdate = this.#aduAgent();
    try {
      await this.#report(patch);
    } catch (error) {
      // Put the work back; the next change or the retry timer sends the latest state.
      for (const target of targets) this.#dirtyTargets.add(target);
      if (problemsDirty) this.#problemsDirty = true;
      this.#log(`reported properties not sent: ${(error as Error).message}`);
      this.#schedule(Math.max(this.#intervalMs, 5_000));
      return;
    }
    if (this.#dirtyTargets.size > 0 || this.#problemsDirty) this.#schedule();
  }

  #latestJob(targetId: string): UpdateJob | undefined {
    return this.#store.recentJobs(200).find((j) => j.targetId === targetId);
  }

  #targetEntry(targetId: string): Record<string, unknown> {
    const installed = this.#store.installed(targetId);
    const job = this.#latestJob(targetId);
    return {
      installedVersion: installed?.version ?? null,
      installedUpdateId: installed ? JSON.stringify(installed.updateId) : null,
      installedVia: installed?.source ?? null,
      jobId: job?.jobId ?? null,
      jobState: job?.state ?? null,
      resultCode: job?.resultCode ?? null,
      extendedResultCode: job?.extendedResultCode ?? null,
      resultDetails: job?.resultDetails?.slice(0, 512) ?? null,
    };
  }

  /** ADU's agent component (PnP component `deviceUpdate`, `__t: "c"`). */
  #aduAgent(): Record<string, unknown> {
    const job = this.#latestJob(this.#gatewayId);
    const installed = this.#store.installed(this.#gatewayId);
    const state = !job || job.state === 'succeeded' ? aduAgentStates.idle : isTerminal(job.state) ? aduAgentStates.failed : aduAgentStates.deploymentInProgress;
    return {
      __t: 'c',
      agent: {
        deviceProperties: {
          manufacturer: this.#deviceProperties.deviceManufacturer ?? this.#deviceProperties.manufacturer ?? null,
          model: this.#deviceProperties.deviceModel ?? this.#deviceProperties.model ?? null,
          interfaceId: 'dtmi:azure:iot:deviceUpdateModel;3',
          aduVer: 'edge-ota;otaOrchestrator/0.1.0',
        },
        compatPropertyNames: Object.keys(this.#deviceProperties).join(','),
        state,
        workflow: job ? { action: 3, id: job.jobId } : null,
        installedUpdateId: installed ? JSON.stringify(installed.updateId) : null,
        lastInstallResult: job && isTerminal(job.state)
          ? {
              resultCode: job.state === 'succeeded' ? 700 : (job.resultCode ?? 0),
              extendedResultCode: job.state === 'succeeded' ? 0 : (job.extendedResultCode ?? 0),
              resultDetails: job.resultDetails?.slice(0, 512) ?? '',
            }
          : null,
      },
    };
  }
}
