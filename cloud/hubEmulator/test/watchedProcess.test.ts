import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { watchProcess } from '../src/index.ts';

// The output watcher every module-process test helper is built on: items parsed from lines, waits that end
// with the process, and a stop that escalates to SIGKILL.

const node = (script: string): ReturnType<typeof spawn> => spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });

describe('watchProcess', () => {
  it('parses lines from both streams and finds an item already seen or still to come', async () => {
    const watched = watchProcess(node(`console.log('one'); console.error('two'); setTimeout(() => console.log('three'), 200)`), { parse: (line) => line.toUpperCase() });
    await expect(watched.waitFor((item) => item === 'TWO', 'two', 5_000)).resolves.toBe('TWO');
    await expect(watched.waitFor((item) => item === 'THREE', 'three', 5_000)).resolves.toBe('THREE');
    await watched.exited;
    expect(watched.items).toEqual(expect.arrayContaining(['ONE', 'TWO', 'THREE']));
    expect(watched.ended).toBe(true);
  });

  it('takes items from stdout only when asked, keeping stderr for the tail', async () => {
    const watched = watchProcess(node(`console.error('{"noise":1}'); console.log('{"ok":true}'); console.log('not json')`), {
      itemsFrom: 'stdout',
      parse: (line) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          return undefined;
        }
      },
    });
    await watched.exited;
    expect(watched.items).toEqual([{ ok: true }]);
    expect(watched.tail()).toContain('not json');
    expect(watched.tail()).toContain('{"noise":1}');
  });

  it('fails a wait as soon as the process ends, with its last lines', async () => {
    const watched = watchProcess(node(`console.error('boom: bad config'); process.exit(3)`), { parse: (line) => line });
    await expect(watched.waitFor((line) => line === 'ready', 'ready', 30_000)).rejects.toThrow(/ended \(3\) before ready:\nboom: bad config/);
  });

  it('fails a wait after its timeout', async () => {
    const watched = watchProcess(node('setTimeout(() => {}, 10_000)'), { parse: (line) => line });
    await expect(watched.waitFor(() => true, 'anything', 100)).rejects.toThrow(/timed out after 100 ms waiting for anything/);
    await watched.stop('SIGKILL');
  });

  it('stops a process that ignores SIGTERM with SIGKILL after the grace period', async () => {
    const watched = watchProcess(node(`process.on('SIGTERM', () => console.log('ignored')); console.log('up'); setInterval(() => {}, 1000)`), { parse: (line) => line });
    await watched.waitFor((line) => line === 'up', 'up', 5_000);
    await watched.stop('SIGTERM', 300);
    expect((await watched.exited).signal).toBe('SIGKILL');
    expect(watched.items).toContain('ignored');
  });
});
