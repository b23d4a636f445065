import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

// A child process seen through its output lines, for tests and tools that start module processes: every line is
// parsed into an item (or dropped), and callers wait for an item with a deadline, or for the end. Waits fail at
// once when the process ends, with its last output lines in the message. Children still running when this
// process exits are killed, so a test that timed out before its cleanup leaves nothing behind.

export interface WatchedProcess<T> {
  readonly child: ChildProcess;
  readonly items: T[];
  /** Resolves when the process has ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly ended: boolean;
  /** The last output lines (stdout and stderr), for error messages. */
  tail(lines?: number): string;
  /** The first item (already seen or to come) that matches, or an error after `timeoutMs` or when the process ends. */
  waitFor(predicate: (item: T) => boolean, what: string, timeoutMs?: number): Promise<T>;
  /** `signal` (SIGTERM by default), then SIGKILL after `graceMs`; resolves once it has ended. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

export interface WatchOptions<T> {
  /** An item from an output line; undefined drops the line (it still counts for tail()). */
  parse: (line: string) => T | undefined;
  /** Which streams' lines become items; the other's lines only go to tail(). Default both. */
  itemsFrom?: 'stdout' | 'both';
  /** Called with every raw line, e.g. to echo a module's output when debugging. */
  onLine?: (line: string) => void;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

const tailLimit = 200;

export function watchProcess<T>(child: ChildProcess, options: WatchOptions<T>): WatchedProcess<T> {
  running.add(child);
  const items: T[] = [];
  const recent: string[] = [];
  const listeners = new Set<() => void>();
  const notify = (): void => {
    for (const listener of [...listeners]) listener();
  };
  const collect = (line: string, asItem: boolean): void => {
    recent.push(line);
    if (recent.length > tailLimit) recent.shift();
    options.onLine?.(line);
    if (!asItem) return;
    const item = options.parse(line);
    if (item === undefined) return;
    items.push(item);
    notify();
  };
  if (child.stdout) createInterface({ input: child.stdout }).on('line', (line) => collect(line, true));
  if (child.stderr) createInterface({ input: child.stderr }).on('line', (line) => collect(line, (options.itemsFrom ?? 'both') === 'both'));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      notify();
      resolve({ code, signal });
    }),
  );
  const hasEnded = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const tail = (lines = 20): string => recent.slice(-lines).join('\n');

  return {
    child,
    items,
    exited,
    get ended() {
      return hasEnded();
    },
    tail,
    waitFor(predicate, what, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = items.find(predicate);
          if (found !== undefined) finish(() => resolve(found));
          else if (hasEnded()) finish(() => reject(new Error(`process ended (${String(child.exitCode ?? child.signalCode)}) before ${what}:\n${tail()}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}:\n${tail()}`))), timeoutMs);
        const finish = (settle: () => void): void => {
          clearTimeout(timer);
          listeners.delete(check);
          settle();
        };
        listeners.add(check);
        check();
      });
    },
    async stop(signal = 'SIGTERM', graceMs = 10_000) {
      if (hasEnded()) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}
