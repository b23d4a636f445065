import { spawn } from 'node:child_process';
import path from 'node:path';

// Runs one external program for a handler (apt-get, dpkg-query, grub-editenv, fw_setenv, a health command) with
// a timeout, its output fed line by line to the job log. Callers map the exit status to a result code, because
// only they know what an exit code of 100 or 1 means for their program.

export interface CommandResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  stdout: string;
  /** The last lines of stdout and stderr together, for a failure message. */
  tail: string;
}

export interface CommandOptions {
  timeoutMs: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  /** Lines beyond this are kept for `tail` but no longer logged (a chatty apt-get must not flood the journal). */
  maxLoggedLines?: number;
}

/** Where a program is found: in `binDir` when one is configured, else on PATH. */
export function program(name: string, binDir: string | undefined): string {
  return binDir ? path.join(binDir, name) : name;
}

export function runCommand(file: string, args: ReadonlyArray<string>, options: CommandOptions): Promise<CommandResult> {
  const log = options.log ?? (() => undefined);
  const maxLogged = options.maxLoggedLines ?? 200;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const tail: string[] = [];
    const stdout: Buffer[] = [];
    let logged = 0;
    const collect = (stream: 'out' | 'err') => (chunk: Buffer): void => {
      if (stream === 'out') stdout.push(chunk);
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line.trim()) continue;
        tail.push(line);
        if (tail.length > 5) tail.shift();
        if (logged++ < maxLogged) log(`${path.basename(file)}: ${line}`);
      }
    };
    child.stdout?.on('data', collect('out'));
    child.stderr?.on('data', collect('err'));
    if (options.input !== undefined) child.stdin?.end(options.input);
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      // A program that ignores SIGTERM (dpkg holding a lock) still must not hold the job forever.
      killTimer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      killTimer.unref();
    }, options.timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      reject(error);
    });
    child.on('close', (exitCode, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      resolve({ exitCode, signal, timedOut, stdout: Buffer.concat(stdout).toString('utf8'), tail: tail.slice(-3).join(' | ') });
    });
  });
}

export function describeExit(result: Pick<CommandResult, 'exitCode' | 'signal' | 'timedOut'>): string {
  if (result.timedOut) return 'a timeout (killed)';
  if (result.signal) return `signal ${result.signal}`;
  return `exit code ${result.exitCode ?? '?'}`;
}
