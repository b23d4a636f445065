// The end of every long-running entry point (the modules, the dispatcher, the emulator): on SIGTERM or SIGINT
// (or any other reason the caller names, e.g. its stdin closing) stop once, then exit 0, or 1 if stopping failed.
// A second signal while stopping is ignored: the runtime's kill after its grace period is the backstop.

export interface StopOptions {
  /** Releases what the process holds (servers, connections, journals). */
  stop: () => Promise<void>;
  /** Where "stopping" and a failure to stop are said. */
  log: (line: string) => void;
  /** Replaced in tests; `process.exit` otherwise. */
  exit?: (code: number) => void;
  signals?: readonly NodeJS.Signals[];
}

/** Installs the signal handlers and returns the same trigger, for other reasons to stop. */
export function stopOnSignals(options: StopOptions): (reason: string) => void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const trigger = (reason: string): void => {
    if (stopping) return;
    stopping = true;
    options.log(`${reason}: stopping`);
    options.stop().then(
      () => exit(0),
      (error: unknown) => {
        options.log(`error while stopping: ${(error as Error).message}`);
        exit(1);
      },
    );
  };
  for (const signal of options.signals ?? ['SIGTERM', 'SIGINT']) process.on(signal, () => trigger(signal));
  return trigger;
}
