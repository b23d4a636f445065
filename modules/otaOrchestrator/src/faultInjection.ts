// Deterministic crash points for the crash-safety tests: with EDGE_OTA_FAULT_KILL_AT=<point>[,<point>...] the
// process SIGKILLs itself at that point of the engine. Unset in production: the check is a no-op.
//
//   enter:<state>          the state is persisted, its action not started (e.g. `enter:installing`)
//   leave:<state>          the action finished, the next state not yet persisted
//   start:<phase>:<step>   a step's phase is recorded as started, its handler not yet called (`start:install:2`)
//   done:<phase>:<step>    the handler finished and the phase is recorded as done; the next step not started
//   failed:<phase>:<step>  the handler failed and that is recorded; the job's next state not yet persisted
//
// <phase> is a step phase (install, apply, rollback, ...), <step> the step's index in the expanded list (the steps
// of a reference step's child counted in place of it), so `done:install:1` falls between two steps of one state.

export type CrashPoint = `${'enter' | 'leave'}:${string}` | `${'start' | 'done' | 'failed'}:${string}:${number}`;

export class FaultInjection {
  readonly #points: ReadonlySet<string>;

  constructor(spec: string | undefined) {
    this.#points = new Set((spec ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0));
  }

  static fromEnvironment(): FaultInjection {
    return new FaultInjection(process.env.EDGE_OTA_FAULT_KILL_AT);
  }

  checkpoint(point: CrashPoint): void {
    if (!this.#points.has(point)) return;
    process.stderr.write(`fault injection: SIGKILL at ${point}\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}
