// Deterministic crash points for the crash-safety tests: with EDGE_OTA_FAULT_KILL_AT=<when>:<state> the process
// SIGKILLs itself at that point of the engine, e.g. `enter:installing` (state persisted, action not started) or
// `leave:installing` (action finished, next state not yet persisted). Unset in production: the check is a no-op.

export type CrashPoint = `${'enter' | 'leave'}:${string}`;

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
