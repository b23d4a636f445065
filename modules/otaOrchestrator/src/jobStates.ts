import type { FeedbackStep } from '@edge-ota/common';

// An update job is an explicit state machine: one table of (state, event) -> next state, Mender-style. The
// engine persists the state *before* it runs the state's action, so after a crash the persisted state names the
// action that may have been interrupted; `recoveryOf` says how to resume it.

export type JobState =
  | 'accepted'
  | 'verifying'
  | 'downloading'
  | 'validating'
  | 'installing'
  | 'applying'
  | 'awaitingReboot'
  | 'running'
  | 'healthChecking'
  | 'committing'
  | 'rollingBack'
  | 'cleaningUp'
  | 'cancelling'
  | 'succeeded'
  | 'failed'
  | 'rolledBack'
  | 'cancelled';

/** What an action reports: done, failed, the update was already there, or the target must reboot to go on. */
export type JobEvent = 'ok' | 'fail' | 'skip' | 'reboot' | 'cancel';

export const terminalStates: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'rolledBack', 'cancelled']);

export function isTerminal(state: JobState): boolean {
  return terminalStates.has(state);
}

type Table = { readonly [S in JobState]: Partial<Record<JobEvent, JobState>> };

// Before anything is installed, failure and cancel go through cleanup; after, they go through rollback.
export const transitions: Table = {
  accepted: { ok: 'verifying', fail: 'failed', cancel: 'cancelled' },
  verifying: { ok: 'downloading', skip: 'succeeded', fail: 'cleaningUp', cancel: 'cancelling' },
  downloading: { ok: 'validating', fail: 'cleaningUp', cancel: 'cancelling' },
  validating: { ok: 'installing', fail: 'cleaningUp', cancel: 'cancelling' },
  installing: { ok: 'applying', fail: 'rollingBack', cancel: 'rollingBack' },
  applying: { ok: 'running', reboot: 'awaitingReboot', fail: 'rollingBack' },
  // After the reboot the new software still gets its run phase before the health check.
  awaitingReboot: { ok: 'running', fail: 'rollingBack' },
  running: { ok: 'healthChecking', fail: 'rollingBack' },
  healthChecking: { ok: 'committing', fail: 'rollingBack' },
  committing: { ok: 'succeeded', fail: 'rollingBack' },
  // Rollback that itself fails leaves the target in an unknown state: report failed, never loop.
  rollingBack: { ok: 'rolledBack', fail: 'failed' },
  cleaningUp: { ok: 'failed', fail: 'failed' },
  cancelling: { ok: 'cancelled', fail: 'failed' },
  succeeded: {},
  failed: {},
  rolledBack: {},
  cancelled: {},
};

export class TransitionError extends Error {
  constructor(state: JobState, event: JobEvent) {
    super(`job state machine has no transition from ${state} on ${event}: this is a bug`);
    this.name = 'TransitionError';
  }
}

/** The next state; an event the table does not handle is a bug and throws loudly. */
export function nextState(state: JobState, event: JobEvent): JobState {
  const next = transitions[state][event];
  if (!next) throw new TransitionError(state, event);
  return next;
}

/** The feedback step each state reports as. */
export const feedbackStepOf: { readonly [S in JobState]: FeedbackStep } = {
  accepted: 'job',
  verifying: 'manifest',
  downloading: 'download',
  validating: 'validate',
  installing: 'install',
  applying: 'apply',
  awaitingReboot: 'apply',
  running: 'run',
  healthChecking: 'healthCheck',
  committing: 'commit',
  rollingBack: 'rollback',
  cleaningUp: 'job',
  cancelling: 'cancel',
  succeeded: 'job',
  failed: 'job',
  rolledBack: 'job',
  cancelled: 'job',
};

/**
 * How often one job may enter the same state before the engine gives up on it. A process that dies in the same
 * action every time (a crashing installer, a kernel that never boots) must not loop forever.
 */
export const maxStateEntries = 3;

/**
 * What an interrupted action means on start-up. `resume` re-runs the action (it is idempotent or resumable);
 * `confirmBoot` is the A/B case: the process is back, so the reboot happened and the boot must now be checked.
 */
export type Recovery = 'resume' | 'confirmBoot';

export const recoveryOf: { readonly [S in JobState]?: Recovery } = {
  accepted: 'resume',
  verifying: 'resume',
  downloading: 'resume',
  validating: 'resume',
  installing: 'resume',
  applying: 'resume',
  awaitingReboot: 'confirmBoot',
  running: 'resume',
  healthChecking: 'resume',
  committing: 'resume',
  rollingBack: 'resume',
  cleaningUp: 'resume',
  cancelling: 'resume',
};
