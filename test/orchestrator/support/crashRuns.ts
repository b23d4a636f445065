import type { FeedbackMessage, UpdateDelivery } from '@edge-ota/common';
import { expect } from 'vitest';
import { eventually } from '../../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import type { GatewayUnderTest, OrchestratorWorld } from './orchestratorWorld.ts';

// The SIGKILL crash runs of the real otaOrchestrator process (crashSafety*.test.ts): the module is started with
// a fault-injection point (modules/otaOrchestrator/src/faultInjection.ts), given the update, killed by itself at
// that point, inspected while it is down, started again, and followed until the job's outcome reaches the cloud.

/** The reported steps of an update that installs (progress left out). */
export const installedFeedback = ['job:started', 'manifest:started', 'manifest:succeeded', 'download:started', 'download:succeeded', 'validate:started',
  'validate:succeeded', 'install:started', 'install:succeeded', 'apply:started', 'apply:succeeded', 'run:started', 'run:succeeded',
  'healthCheck:started', 'healthCheck:succeeded', 'commit:started', 'commit:succeeded', 'job:succeeded'];

/** The feedback as compact `step:status` strings, progress left out. */
export function reportedSteps(feedback: FeedbackMessage[]): string[] {
  return feedback.filter((m) => m.status !== 'progress').map((m) => `${m.step}:${m.status}`);
}

export interface CrashRun {
  /** EDGE_OTA_FAULT_KILL_AT for the first process. */
  point: string;
  jobId: string;
  delivery: UpdateDelivery;
  /** The job's last feedback, `job:succeeded` or `job:rolledBack`. */
  terminal: string;
  /** Runs after the kill, before the restart: look at what the killed process left, or take something away. */
  whileDown?: () => void;
}

/**
 * Kills the module at `run.point` while it works on the delivery, restarts it, and returns the job's feedback as
 * it reached the cloud once the terminal message is there. Checks that the kill happened where asked and that no
 * feedback was lost or sent twice (sequence numbers 0..n, no gap, no repeat).
 */
export async function killAndResume(world: OrchestratorWorld, gw: GatewayUnderTest, run: CrashRun): Promise<FeedbackMessage[]> {
  const first = await gw.start({ EDGE_OTA_FAULT_KILL_AT: run.point });
  // The method call may time out while the module is being killed; the feedback is what counts.
  void world.deliver(gw.deviceId, run.delivery).catch((error: unknown) => error);
  let timer: NodeJS.Timeout | undefined;
  const notKilled = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`module not killed at ${run.point}:\n${first.lines.slice(-30).join('\n')}`)), 30_000);
  });
  const ended = await Promise.race([first.exited, notKilled]).finally(() => clearTimeout(timer));
  expect(ended.signal, `the module should have been killed at ${run.point}`).toBe('SIGKILL');
  expect(first.lines.some((l) => l.includes(`fault injection: SIGKILL at ${run.point}`))).toBe(true);
  run.whileDown?.();

  const second = await gw.start();
  const feedback = await eventually(() => {
    const got = world.feedbackOf(run.jobId);
    return got.some((m) => `${m.step}:${m.status}` === run.terminal) ? got : undefined;
  }, 45_000, `${run.terminal} for ${run.jobId}`);
  await second.stop();
  expect(feedback.map((m) => m.sequence)).toEqual(feedback.map((_m, i) => i));
  return feedback;
}
