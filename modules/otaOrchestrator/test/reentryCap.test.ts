import { OtaError } from '@edge-ota/common';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PhaseOutcome, StepContext, UpdateHandler } from '../src/handlers/updateHandler.ts';
import { done } from '../src/handlers/updateHandler.ts';
import type { ArtifactServer } from './support/artifactServer.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import { createPublisher } from './support/signedUpdates.ts';

// A target whose install never finishes (the process dies in it every time, like an installer that crashes the
// gateway) must not be retried forever: after maxStateEntries the engine gives up and rolls back.

/** An install that only ends when the engine stops (the stand-in for the process dying in it). */
class NeverFinishingInstall implements UpdateHandler {
  readonly ids = ['test/hangs:1'];
  readonly needsLocalFiles = true;
  installs = 0;
  rollbacks = 0;

  isInstalled(): Promise<boolean> {
    return Promise.resolve(false);
  }

  install(context: StepContext): Promise<PhaseOutcome> {
    this.installs += 1;
    return new Promise((_resolve, reject) => context.signal.addEventListener('abort', () => reject(new OtaError('INSTALL_FAILED', 'killed')), { once: true }));
  }

  apply(): Promise<PhaseOutcome> {
    return Promise.resolve(done());
  }

  rollback(): Promise<PhaseOutcome> {
    this.rollbacks += 1;
    return Promise.resolve(done());
  }
}

describe('re-entry cap', () => {
  let server: ArtifactServer;
  beforeAll(async () => {
    server = await startArtifactServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('stops a job whose install never completes after three attempts, and rolls it back once', async () => {
    const publisher = createPublisher();
    const root = mkdtempSync(path.join(tmpdir(), 'reentry-'));
    const payload = Buffer.from('x'.repeat(1000));
    server.put('hang.bin', payload);
    const handler = new NeverFinishingInstall();
    const delivery = publisher.deliver({ version: '9.0.0', files: { 'hang.bin': payload }, steps: [{ handler: 'test/hangs:1', files: ['hang.bin'] }] }, { baseUrl: server.baseUrl });

    let harness = startEngine(publisher, { root, extraHandlers: [handler] });
    harness.engine.submit(delivery, 'method');
    // Each round: wait until the install is running, then "kill" the process and start a new one on the same state.
    for (let round = 1; round <= 3; round += 1) {
      for (let i = 0; i < 500 && handler.installs < round; i += 1) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(handler.installs).toBe(round);
      await harness.close();
      harness = startEngine(publisher, { root, extraHandlers: [handler] });
    }
    await harness.engine.idle();
    const feedback = harness.feedback(delivery.workflow.id);
    await harness.close();
    expect(handler.installs).toBe(3);
    expect(handler.rollbacks).toBe(1);
    expect(steps(feedback).slice(-4)).toEqual(['install:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack']);
    expect(feedback.at(-1)?.resultDetails).toMatch(/^JOB_STATE_LOOP: state installing was entered 4 times/);
  });
});
