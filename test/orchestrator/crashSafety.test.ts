import type { FeedbackMessage, UpdateDelivery } from '@edge-ota/common';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import { installedFeedback, killAndResume, reportedSteps } from './support/crashRuns.ts';
import type { GatewayUnderTest, OrchestratorWorld } from './support/orchestratorWorld.ts';
import { startOrchestratorWorld } from './support/orchestratorWorld.ts';

// Crash safety of the real otaOrchestrator process against the hub emulator: for every state transition of a
// two-step update (a file step and a script step), the module SIGKILLs itself right after entering the state
// (persisted, action not started) or right after finishing its action (next state not persisted), is started
// again, and must end installed-and-reported or rolled-back-and-reported: every step done exactly once, every
// feedback message delivered (no gap in the sequence), nothing but the update installed.

const happyStates = ['accepted', 'verifying', 'downloading', 'validating', 'installing', 'applying', 'running', 'healthChecking', 'committing'];
const rollbackSteps = ['job:started', 'manifest:started', 'manifest:succeeded', 'download:started', 'download:succeeded', 'validate:started',
  'validate:succeeded', 'install:started', 'install:succeeded', 'apply:started', 'apply:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack'];

const cases: Array<{ point: string; failApply: boolean }> = [
  ...happyStates.flatMap((state) => [{ point: `enter:${state}`, failApply: false }, { point: `leave:${state}`, failApply: false }]),
  { point: 'enter:applying', failApply: true },
  // The apply failed and that is recorded, the move to rollingBack not: after the restart it is not applied again.
  { point: 'leave:applying', failApply: true },
  { point: 'enter:rollingBack', failApply: true },
  { point: 'leave:rollingBack', failApply: true },
];

describe('otaOrchestrator crash safety (SIGKILL at every transition)', () => {
  let world: OrchestratorWorld;
  let caseNumber = 0;

  beforeAll(async () => {
    world = await startOrchestratorWorld();
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
  });

  /** One gateway with its own state. */
  const gateway = (): Promise<GatewayUnderTest> => {
    caseNumber += 1;
    return world.gateway(`gw-crash-${caseNumber}`);
  };
  // The method call may time out while the module is being killed; the feedback is what counts.
  const deliver = (deviceId: string, delivery: UpdateDelivery): Promise<unknown> => world.deliver(deviceId, delivery).catch((error: unknown) => error);
  const feedbackOf = (jobId: string): FeedbackMessage[] => world.feedbackOf(jobId);

  const update = (gw: { stateDir: string }, failApply: boolean, jobId: string) => {
    const log = path.join(gw.stateDir, 'script.log');
    const script = Buffer.from(`#!/bin/sh\necho "$1" >> ${log}\n${failApply ? 'if [ "$1" = --action-apply ]; then exit 4; fi\n' : ''}exit 0\n`);
    const payload = Buffer.from(`payload for ${jobId}\n`.repeat(5000));
    const name = `step-${jobId}.sh`;
    world.server.put(name, script);
    world.server.put(`app-${jobId}.bin`, payload);
    const delivery = world.publisher.deliver({
      version: '2.0.0',
      files: { [`app-${jobId}.bin`]: payload, [name]: script },
      steps: [
        { handler: 'edge-ota/file:1', files: [`app-${jobId}.bin`], handlerProperties: { destination: path.join(gw.stateDir, 'install', 'app') } },
        { handler: 'edge-ota/script:1', files: [name], handlerProperties: { scriptFileName: name } },
      ],
    }, { baseUrl: world.server.baseUrl, jobId });
    return { delivery, log, payload, installed: path.join(gw.stateDir, 'install', 'app', `app-${jobId}.bin`) };
  };

  it.each(cases)('killed at $point (apply fails: $failApply) it resumes and reports everything once', async ({ point, failApply }) => {
    const gw = await gateway();
    const jobId = `crash-${caseNumber}`;
    const { delivery, log, payload, installed } = update(gw, failApply, jobId);
    // No feedback lost (killAndResume checks the sequence numbers); the steps in order, each once.
    const feedback = await killAndResume(world, gw, { point, jobId, delivery, terminal: failApply ? 'job:rolledBack' : 'job:succeeded' });
    expect(reportedSteps(feedback)).toEqual(failApply ? rollbackSteps : installedFeedback);
    // No step done twice.
    const actions = readFileSync(log, 'utf8').trim().split('\n');
    expect(actions).toEqual(failApply ? ['--action-install', '--action-apply', '--action-cancel'] : ['--action-install', '--action-apply']);
    if (failApply) {
      expect(() => statSync(installed)).toThrow();
      expect(feedback.at(-1)?.resultDetails).toMatch(/^APPLY_FAILED/);
    } else {
      expect(readFileSync(installed)).toEqual(payload);
      expect(feedback.at(-1)).toMatchObject({ resultCode: 1, installedVersion: '2.0.0' });
    }
  }, 90_000);

  it('resumes a download killed at 60% from the partial file', async () => {
    const gw = await gateway();
    const jobId = `crash-download-${caseNumber}`;
    const big = Buffer.alloc(4 * 1024 * 1024, 0x5a);
    const bigName = `app-${jobId}.bin`;
    world.server.put(bigName, big);
    const bigDelivery = world.publisher.deliver({
      version: '2.0.0',
      files: { [bigName]: big },
      steps: [{ handler: 'edge-ota/file:1', files: [bigName], handlerProperties: { destination: path.join(gw.stateDir, 'install', 'app') } }],
    }, { baseUrl: world.server.baseUrl, jobId });
    world.server.throttle(16 * 1024);
    const first = await gw.start();
    void deliver(gw.deviceId, bigDelivery);
    const jobsDir = path.join(gw.stateDir, 'data', 'jobs');
    const partial = await eventually(() => {
      for (const job of safeList(jobsDir)) {
        const file = path.join(jobsDir, job, 'files', `${bigName}.part`);
        try {
          if (statSync(file).size >= big.length * 0.6) return file;
        } catch {
          // not there yet
        }
      }
      return undefined;
    }, 60_000, 'the download to pass 60%');
    first.child.kill('SIGKILL');
    await first.exited;
    const keptBytes = statSync(partial).size;
    expect(keptBytes).toBeGreaterThanOrEqual(big.length * 0.6);
    expect(keptBytes).toBeLessThan(big.length);

    world.server.throttle(0);
    const requestsBefore = world.server.requests.length;
    const second = await gw.start();
    await eventually(() => feedbackOf(jobId).find((m) => m.step === 'job' && m.status === 'succeeded'), 45_000, 'the resumed job to succeed');
    await second.stop();
    const resumed = world.server.requests.slice(requestsBefore).filter((r) => r.path === `/files/${bigName}`);
    expect(resumed).toHaveLength(1);
    // The new process asks for exactly the bytes the killed one had not written.
    expect(resumed[0]?.range).toBe(`bytes=${keptBytes}-`);
    expect(readFileSync(path.join(gw.stateDir, 'install', 'app', bigName)).equals(big)).toBe(true);
  }, 120_000);
});

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
