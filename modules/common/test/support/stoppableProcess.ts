// A long-running process ended by stopOnSignals, for its test: it says "ready", then waits. `STOP_FAILS=1` makes
// stopping fail; `STOP_MS` is how long stopping takes. Every call to stop is printed, so the test can count them.
import { stopOnSignals } from '../../src/process/stopOnSignals.ts';

const stopMs = Number(process.env.STOP_MS ?? 0);
const trigger = stopOnSignals({
  log: (line) => process.stdout.write(`log: ${line}\n`),
  stop: async () => {
    process.stdout.write('stop called\n');
    await new Promise((resolve) => setTimeout(resolve, stopMs));
    if (process.env.STOP_FAILS === '1') throw new Error('journal would not close');
  },
});
process.stdin.on('end', () => trigger('stdin closed'));
process.stdin.resume();
setInterval(() => undefined, 60_000);
process.stdout.write('ready\n');
