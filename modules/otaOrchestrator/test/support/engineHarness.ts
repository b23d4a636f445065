import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FeedbackMessage } from '@edge-ota/common';
import { ArtifactDownloader } from '../../src/artifactDownloader.ts';
import { FaultInjection } from '../../src/faultInjection.ts';
import { FileHandler } from '../../src/handlers/fileHandler.ts';
import { ScriptHandler } from '../../src/handlers/scriptHandler.ts';
import { HandlerRegistry } from '../../src/handlers/updateHandler.ts';
import type { UpdateHandler } from '../../src/handlers/updateHandler.ts';
import { JobStore } from '../../src/jobStore.ts';
import { UpdateEngine } from '../../src/updateEngine.ts';
import type { Rebooter } from '../../src/updateEngine.ts';
import type { Publisher } from './signedUpdates.ts';
import { compatibleProperties } from './signedUpdates.ts';

/** An engine in this process with real SQLite, real files and real HTTP; only the module client is left out. */
export interface EngineHarness {
  engine: UpdateEngine;
  store: JobStore;
  root: string;
  installRoot: string;
  feedback(jobId?: string): FeedbackMessage[];
  close(): Promise<void>;
}

export function startEngine(publisher: Publisher, options: { extraHandlers?: UpdateHandler[]; gatewayId?: string; root?: string; rebooter?: Rebooter; faults?: FaultInjection } = {}): EngineHarness {
  const root = options.root ?? mkdtempSync(path.join(tmpdir(), 'orchestrator-'));
  const installRoot = path.join(root, 'install');
  const store = new JobStore(path.join(root, 'jobs.sqlite'));
  const gatewayId = options.gatewayId ?? 'gw-1';
  const engine = new UpdateEngine({
    store,
    trustStore: publisher.trustStore(),
    handlers: new HandlerRegistry([new FileHandler([installRoot]), new ScriptHandler(), ...(options.extraHandlers ?? [])]),
    downloader: new ArtifactDownloader({ attemptsPerSource: 3, backoffMs: () => 10, reserveBytes: 0 }),
    dataDir: path.join(root, 'data'),
    gatewayId,
    targetProperties: (targetId) => (targetId === gatewayId || targetId.startsWith('child-') ? { properties: compatibleProperties } : undefined),
    artifactSources: (originUrl) => [{ url: originUrl }],
    rebooter: options.rebooter ?? { reboot: () => Promise.resolve() },
    faults: options.faults ?? new FaultInjection(undefined),
  });
  engine.start();
  return {
    engine,
    store,
    root,
    installRoot,
    feedback: (jobId) => store.pendingFeedback(10_000).map((e) => e.message).filter((m) => jobId === undefined || m.jobId === jobId),
    async close() {
      await engine.stop();
      store.close();
    },
  };
}

/** The feedback of a job as compact `step:status` strings, progress left out. */
export function steps(messages: FeedbackMessage[]): string[] {
  return messages.filter((m) => m.status !== 'progress').map((m) => `${m.step}:${m.status}`);
}
