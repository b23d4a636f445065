import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// stopOnSignals in a real process: real signals, real exit codes.

const child = fileURLToPath(new URL('./support/stoppableProcess.ts', import.meta.url));

interface Run {
  signal(name: NodeJS.Signals): void;
  closeStdin(): void;
  exited: Promise<{ code: number | null; output: string[] }>;
}

async function start(env: Record<string, string> = {}): Promise<Run> {
  const proc = spawn(process.execPath, ['--import', 'tsx', child], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
  let output = '';
  const ready = new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (data: Buffer) => {
      output += data.toString();
      if (output.includes('ready\n')) resolve();
    });
    proc.on('exit', () => reject(new Error(`exited before ready: ${output}`)));
  });
  const exited = new Promise<{ code: number | null; output: string[] }>((resolve) =>
    proc.on('exit', (code) => resolve({ code, output: output.trim().split('\n').filter((l) => l !== 'ready') })),
  );
  await ready;
  return { signal: (name) => proc.kill(name), closeStdin: () => proc.stdin.end(), exited };
}

describe('stopOnSignals', () => {
  it('stops once on SIGTERM, a second signal while stopping changes nothing, and exits 0', async () => {
    const run = await start({ STOP_MS: '300' });
    run.signal('SIGTERM');
    await new Promise((resolve) => setTimeout(resolve, 100));
    run.signal('SIGINT');
    expect(await run.exited).toEqual({ code: 0, output: ['log: SIGTERM: stopping', 'stop called'] });
  }, 20_000);

  it('exits 1 and says why when stopping fails', async () => {
    const run = await start({ STOP_FAILS: '1' });
    run.signal('SIGINT');
    expect(await run.exited).toEqual({ code: 1, output: ['log: SIGINT: stopping', 'stop called', 'log: error while stopping: journal would not close'] });
  }, 20_000);

  it('stops for a reason of the caller\'s own (stdin closed)', async () => {
    const run = await start();
    run.closeStdin();
    expect(await run.exited).toEqual({ code: 0, output: ['log: stdin closed: stopping', 'stop called'] });
  }, 20_000);
});
