import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobStore } from '../../modules/otaOrchestrator/src/jobStore.ts';
import type { ChildDocument, PayloadFile } from '../../modules/otaOrchestrator/test/support/composedUpdates.ts';
import { childUpdate, composedDelivery, servedPath } from '../../modules/otaOrchestrator/test/support/composedUpdates.ts';
import { installedFeedback, killAndResume, reportedSteps } from './support/crashRuns.ts';
import type { GatewayUnderTest, OrchestratorWorld } from './support/orchestratorWorld.ts';
import { startOrchestratorWorld } from './support/orchestratorWorld.ts';
import { logLines, scriptStep } from '../../modules/otaOrchestrator/test/support/scriptSteps.ts';

// Crash safety of ADU reference steps in the real otaOrchestrator process: an update made of a parent step (0) and
// a reference step whose child update has two steps (1 and 2), every step a script that logs each action it is
// asked for. The module SIGKILLs itself at a state boundary or between two steps of one state
// (`done:<phase>:<step>`, `start:<phase>:<step>`, see faultInjection.ts), is started again, and must end installed
// (or, when the child's second step fails its install, rolled back) and reported: every action exactly once, no
// feedback gap or repeat, and the child manifest fetched once, read again from the job's kept copy after the
// restart, unless that copy is gone.

const installs = ['pre.sh --action-install', 'a.sh --action-install', 'b.sh --action-install'];
const installedActions = [...installs, 'pre.sh --action-apply', 'a.sh --action-apply', 'b.sh --action-apply'];
// Newest first, the failed step included: its install started.
const rolledBackActions = [...installs, 'b.sh --action-cancel', 'a.sh --action-cancel', 'pre.sh --action-cancel'];
const rolledBackFeedback = ['job:started', 'manifest:started', 'manifest:succeeded', 'download:started', 'download:succeeded', 'validate:started',
  'validate:succeeded', 'install:started', 'install:failed', 'rollback:started', 'rollback:succeeded', 'job:rolledBack'];

interface Case {
  point: string;
  /** The child's second step (step 2) fails its install: the job rolls back. */
  fails?: boolean;
  /** Script actions done when the module died: the kill point is where its name says. */
  actionsAtKill: number;
  /** Whether verifying had finished its work (child manifest kept, selection recorded) when the module died. */
  verifiedAtKill: boolean;
  /** The kept child manifest is deleted while the module is down: it must be fetched again (and only then). */
  dropKeptChild?: boolean;
  /** A second reference step whose child is not for this gateway: the selection recorded before the kill holds. */
  foreignChild?: boolean;
}

const table: Case[] = [
  { point: 'enter:verifying', actionsAtKill: 0, verifiedAtKill: false },
  { point: 'leave:verifying', actionsAtKill: 0, verifiedAtKill: true },
  { point: 'enter:downloading', actionsAtKill: 0, verifiedAtKill: true, foreignChild: true },
  { point: 'leave:downloading', actionsAtKill: 0, verifiedAtKill: true },
  { point: 'enter:installing', actionsAtKill: 0, verifiedAtKill: true },
  // Between the child's two steps: the first installed and recorded done, the second not started.
  { point: 'done:install:1', actionsAtKill: 2, verifiedAtKill: true },
  { point: 'done:install:1', actionsAtKill: 2, verifiedAtKill: true, dropKeptChild: true },
  // The child's second step recorded as started, its script not yet run: it runs once, after the restart.
  { point: 'start:install:2', actionsAtKill: 2, verifiedAtKill: true },
  { point: 'leave:installing', actionsAtKill: 3, verifiedAtKill: true },
  { point: 'enter:applying', actionsAtKill: 3, verifiedAtKill: true },
  { point: 'done:apply:1', actionsAtKill: 5, verifiedAtKill: true },
  { point: 'leave:applying', actionsAtKill: 6, verifiedAtKill: true },
  { point: 'done:install:1', fails: true, actionsAtKill: 2, verifiedAtKill: true },
  // The child's second step failed and that is recorded, the move to rollingBack not: the failure is not run again.
  { point: 'failed:install:2', fails: true, actionsAtKill: 3, verifiedAtKill: true },
  { point: 'leave:installing', fails: true, actionsAtKill: 3, verifiedAtKill: true },
  { point: 'enter:rollingBack', fails: true, actionsAtKill: 3, verifiedAtKill: true },
  // Between the child's two rollbacks, newest first: step 2 rolled back, step 1 not started.
  { point: 'done:rollback:2', fails: true, actionsAtKill: 4, verifiedAtKill: true },
  { point: 'leave:rollingBack', fails: true, actionsAtKill: 6, verifiedAtKill: true },
];
const cases = table.map((c) => ({
  ...c,
  variant: [c.fails ? 'rolls back' : 'installs', c.dropKeptChild ? 'kept child deleted' : '', c.foreignChild ? '+ foreign child' : ''].filter((s) => s).join(', '),
}));

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The job directories' kept copies of a child manifest (manifest/children/<file id>.json, see stepExpansion.ts). */
function keptCopies(gw: GatewayUnderTest, child: ChildDocument): string[] {
  const jobsDir = path.join(gw.stateDir, 'data', 'jobs');
  return safeList(jobsDir).map((job) => path.join(jobsDir, job, 'manifest', 'children', `${child.id}.json`)).filter((file) => existsSync(file));
}

/** Reads the killed or stopped module's journal (never while a process runs on it). */
function withJournal<T>(gw: GatewayUnderTest, read: (store: JobStore) => T): T {
  const store = new JobStore(path.join(gw.stateDir, 'jobs.sqlite'));
  try {
    return read(store);
  } finally {
    store.close();
  }
}

describe('otaOrchestrator crash safety with a reference step (SIGKILL between child steps and at state boundaries)', () => {
  let world: OrchestratorWorld;
  let caseNumber = 0;

  beforeAll(async () => {
    world = await startOrchestratorWorld();
  }, 60_000);
  afterAll(async () => {
    await world?.stop();
  });

  const requestsFor = (file: { id: string; name: string }): number => world.server.requests.filter((r) => r.path === `/files/${servedPath(file)}`).length;

  /** Parent step 0 (pre.sh), reference step 1 whose child has steps a.sh and b.sh; optionally a child for another device. */
  const composed = (gw: GatewayUnderTest, jobId: string, { fails = false, foreignChild = false }: Pick<Case, 'fails' | 'foreignChild'>) => {
    const log = path.join(gw.stateDir, 'steps.log');
    const script = (name: string, extra = ''): PayloadFile => ({
      id: `${jobId}-${name}`,
      name,
      data: Buffer.from(`#!/bin/sh\necho "${name} $1" >> ${log}\n${extra}exit 0\n`),
    });
    const pre = script('pre.sh');
    const a = script('a.sh');
    const b = script('b.sh', fails ? 'if [ "$1" = --action-install ]; then echo "flash write error" >&2; exit 5; fi\n' : '');
    const child = childUpdate({ id: `${jobId}-child`, name: 'child.updatemanifest.json', update: 'Child', version: '1.0.0', steps: [scriptStep(a), scriptStep(b)], files: [a, b] });
    const c = script('c.sh');
    const foreign = childUpdate({
      id: `${jobId}-foreign`, name: 'motor.updatemanifest.json', update: 'Motor', version: '1.0.0', compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Motor' }],
      steps: [scriptStep(c)], files: [c],
    });
    const delivery = composedDelivery(world.publisher, world.server, { version: '7.0.0', jobId, files: [pre], steps: [scriptStep(pre), child, ...(foreignChild ? [foreign] : [])] });
    return { delivery, log, child, foreign, payload: [pre, a, b], foreignPayload: c };
  };

  it.each(cases)('killed at $point ($variant): resumes and reports everything once',
    async ({ point, fails = false, actionsAtKill, verifiedAtKill, dropKeptChild = false, foreignChild = false }) => {
      caseNumber += 1;
      const gw = await world.gateway(`gw-refcrash-${caseNumber}`);
      const jobId = `refcrash-${caseNumber}`;
      const { delivery, log, child, foreign, payload, foreignPayload } = composed(gw, jobId, { fails, foreignChild });
      const actions = fails ? rolledBackActions : installedActions;
      let killed: { actions: string[]; kept: number; selection: Array<boolean | undefined> } | undefined;

      const feedback = await killAndResume(world, gw, {
        point,
        jobId,
        delivery,
        terminal: fails ? 'job:rolledBack' : 'job:succeeded',
        whileDown: () => {
          killed = {
            actions: logLines(log),
            kept: keptCopies(gw, child).length,
            selection: withJournal(gw, (store) => [1, 2, 3].map((step) => store.stepSelection(jobId, step))),
          };
          if (dropKeptChild) for (const file of keptCopies(gw, child)) rmSync(file);
        },
      });

      // Killed where the point says: the actions done so far, and verifying's work kept (or not yet done).
      expect(killed?.actions).toEqual(actions.slice(0, actionsAtKill));
      expect(killed?.kept).toBe(verifiedAtKill ? 1 : 0);
      expect(killed?.selection).toEqual(verifiedAtKill ? [true, true, foreignChild ? false : undefined] : [undefined, undefined, undefined]);

      expect(reportedSteps(feedback)).toEqual(fails ? rolledBackFeedback : installedFeedback);
      // Every action exactly once, in order; nothing of a child that is not for this gateway.
      expect(logLines(log)).toEqual(actions);
      // The child manifest is fetched once and read from the kept copy after the restart, unless that was taken away;
      // no payload is fetched twice, and none of the foreign child's.
      expect(requestsFor({ id: child.id, name: child.name })).toBe(dropKeptChild ? 2 : 1);
      for (const file of payload) expect(requestsFor(file), file.name).toBe(1);
      if (foreignChild) {
        expect(requestsFor({ id: foreign.id, name: foreign.name })).toBe(1);
        expect(requestsFor(foreignPayload)).toBe(0);
      }
      const installed = withJournal(gw, (store) => store.installed(gw.deviceId));
      if (fails) {
        expect(feedback.at(-1)?.resultDetails).toMatch(/^INSTALL_FAILED: script --action-install ended with exit code 5/);
        expect(installed).toBeUndefined();
      } else {
        expect(feedback.at(-1)).toMatchObject({ resultCode: 1, installedVersion: '7.0.0' });
        expect(installed).toMatchObject({ version: '7.0.0', updateId: { name: 'Composed' } });
      }
    }, 90_000);
});
