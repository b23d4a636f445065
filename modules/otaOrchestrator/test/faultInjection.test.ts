import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { CrashPoint } from '../src/faultInjection.ts';
import { FaultInjection } from '../src/faultInjection.ts';
import type { ArtifactServer } from './support/artifactServer.ts';
import { startArtifactServer } from './support/artifactServer.ts';
import { childUpdate, composedDelivery } from './support/composedUpdates.ts';
import type { EngineHarness } from './support/engineHarness.ts';
import { startEngine, steps } from './support/engineHarness.ts';
import type { Publisher } from './support/signedUpdates.ts';
import { createPublisher } from './support/signedUpdates.ts';
import { logLines, loggingScript, scriptStep } from './support/scriptSteps.ts';

// The crash points the SIGKILL tests (test/orchestrator/) rely on: only the listed points kill, and the per-step
// points sit where their names say, between the steps of one state, a reference step's child steps included.

/** Records every checkpoint with the script actions done by then, and kills nothing. */
class RecordingFaults extends FaultInjection {
  readonly seen: Array<{ point: CrashPoint; actions: number }> = [];
  readonly #log: string;

  constructor(log: string) {
    super(undefined);
    this.#log = log;
  }

  override checkpoint(point: CrashPoint): void {
    this.seen.push({ point, actions: logLines(this.#log).length });
  }
}

describe('fault injection checkpoints', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('kills the process at a listed point only, state and step points alike', () => {
    const kill = vi.spyOn(process, 'kill').mockImplementation(() => true);
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const faults = new FaultInjection(' enter:installing , done:install:1 ');
    faults.checkpoint('leave:installing');
    faults.checkpoint('done:install:2');
    faults.checkpoint('start:install:1');
    expect(kill).not.toHaveBeenCalled();
    faults.checkpoint('done:install:1');
    expect(kill).toHaveBeenCalledWith(process.pid, 'SIGKILL');
    expect(write).toHaveBeenCalledWith('fault injection: SIGKILL at done:install:1\n');
    faults.checkpoint('enter:installing');
    expect(kill).toHaveBeenCalledTimes(2);
    new FaultInjection(undefined).checkpoint('done:install:1');
    expect(kill).toHaveBeenCalledTimes(2);
  });

  describe('in the engine', () => {
    let publisher: Publisher;
    let server: ArtifactServer;
    let harness: EngineHarness;
    beforeAll(async () => {
      publisher = createPublisher();
      server = await startArtifactServer();
    });
    afterAll(async () => {
      await server.close();
    });
    afterEach(async () => {
      await harness?.close();
    });

    /** A parent step (0) and a reference step whose child has two steps (1 and 2); `broken` fails its install. */
    const run = async (name: string, broken: boolean): Promise<{ points: Array<{ point: CrashPoint; actions: number }>; feedback: string[] }> => {
      const root = mkdtempSync(path.join(tmpdir(), 'fault-points-'));
      const log = path.join(root, 'steps.log');
      const faults = new RecordingFaults(log);
      harness = startEngine(publisher, { root, faults });
      const pre = loggingScript(`${name}-pre`, 'pre.sh', log);
      const first = loggingScript(`${name}-a`, 'a.sh', log);
      const second = loggingScript(`${name}-b`, 'b.sh', log, broken ? 'if [ "$1" = --action-install ]; then exit 5; fi\n' : '');
      const child = childUpdate({ id: `${name}-child`, name: 'child.json', update: 'Child', version: '1.0.0', steps: [scriptStep(first), scriptStep(second)], files: [first, second] });
      const delivery = composedDelivery(publisher, server, { version: '6.0.0', files: [pre], steps: [scriptStep(pre), child] });
      harness.engine.submit(delivery, 'method');
      await harness.engine.idle();
      // The step points, and the state points of the states that run steps around them.
      const points = faults.seen.filter((s) => /^(start|done|failed):/.test(s.point) || /^(enter|leave):(installing|applying|rollingBack)$/.test(s.point));
      return { points, feedback: steps(harness.feedback(delivery.workflow.id)) };
    };

    it('puts start and done of every step phase around its handler, in step order, child steps included', async () => {
      const { points, feedback } = await run('fi-happy', false);
      expect(feedback.at(-1)).toBe('job:succeeded');
      // `actions` is how many script actions had run when the point was reached: a kill at `start:` comes before
      // the step's handler, a kill at `done:` after it and before the next step.
      expect(points).toEqual([
        { point: 'enter:installing', actions: 0 },
        { point: 'start:install:0', actions: 0 }, { point: 'done:install:0', actions: 1 },
        { point: 'start:install:1', actions: 1 }, { point: 'done:install:1', actions: 2 },
        { point: 'start:install:2', actions: 2 }, { point: 'done:install:2', actions: 3 },
        { point: 'leave:installing', actions: 3 },
        { point: 'enter:applying', actions: 3 },
        { point: 'start:apply:0', actions: 3 }, { point: 'done:apply:0', actions: 4 },
        { point: 'start:apply:1', actions: 4 }, { point: 'done:apply:1', actions: 5 },
        { point: 'start:apply:2', actions: 5 }, { point: 'done:apply:2', actions: 6 },
        { point: 'leave:applying', actions: 6 },
      ]);
    });

    it('has a failed point instead of a done point for a step that failed, and rolls back newest first between start and done points', async () => {
      const { points, feedback } = await run('fi-rollback', true);
      expect(feedback.at(-1)).toBe('job:rolledBack');
      expect(points).toEqual([
        { point: 'enter:installing', actions: 0 },
        { point: 'start:install:0', actions: 0 }, { point: 'done:install:0', actions: 1 },
        { point: 'start:install:1', actions: 1 }, { point: 'done:install:1', actions: 2 },
        { point: 'start:install:2', actions: 2 }, { point: 'failed:install:2', actions: 3 },
        { point: 'leave:installing', actions: 3 },
        { point: 'enter:rollingBack', actions: 3 },
        { point: 'start:rollback:2', actions: 3 }, { point: 'done:rollback:2', actions: 4 },
        { point: 'start:rollback:1', actions: 4 }, { point: 'done:rollback:1', actions: 5 },
        { point: 'start:rollback:0', actions: 5 }, { point: 'done:rollback:0', actions: 6 },
        { point: 'leave:rollingBack', actions: 6 },
      ]);
    });
  });
});
