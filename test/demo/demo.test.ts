import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { DemoSummary } from './demoScenario.ts';
import { CHILD, MCU, TOP } from './demoScenario.ts';
import { runCommand } from '../support/runCommand.ts';
import type { CommandRun } from '../support/runCommand.ts';

// The demo as a user runs it (`npm run demo -- --json`), end to end, in its own process tree. The summary is
// checked field by field here rather than trusting its own `ok`.

const repositoryRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function runDemo(stateDir: string): Promise<CommandRun> {
  return runCommand('npm', ['run', '--silent', 'demo', '--', '--json', '--state-dir', stateDir], { cwd: repositoryRoot, timeoutMs: 420_000 });
}

describe('npm run demo -- --json', () => {
  const stateDir = mkdtempSync(path.join(tmpdir(), 'edge-ota-demo-'));
  afterAll(() => rmSync(stateDir, { recursive: true, force: true }));

  it('runs the whole flow and its summary shows every part done', async () => {
    const { code, stdout, stderr } = await runDemo(stateDir);
    const last = stdout.trim().split('\n').at(-1) ?? '';
    expect(last.startsWith('{'), `no JSON summary on stdout:\n${stdout}\n${stderr.slice(-4000)}`).toBe(true);
    const summary = JSON.parse(last) as DemoSummary;
    const failed = summary.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.details}`);
    expect(failed, stderr.slice(-4000)).toEqual([]);
    expect(code).toBe(0);

    const device = (id: string): DemoSummary['devices'][number] => {
      const found = summary.devices.find((d) => d.deviceId === id);
      if (!found) throw new Error(`${id} missing from the summary`);
      return found;
    };
    // The MCU: the cloud job on 1.1.0, then the USB job on 1.2.0 reported after the link came back, and its own
    // twin (written by the translator under the MCU's identity) confirming what runs.
    expect(device(MCU)).toMatchObject({ role: 'mcu', parentId: CHILD, installedVersion: '1.2.0' });
    expect(device(MCU).jobs.map((j) => [j.updateId, j.state, j.origin])).toEqual([
      ['Contoso/SensorFirmware@1.1.0', 'succeeded', 'dispatched'],
      ['Contoso/SensorFirmware@1.2.0', 'succeeded', 'offline'],
    ]);
    expect(summary.mcu.reportedFirmware).toMatchObject({ currentFwVersion: '1.2.0', fwUpdateStatus: 'current' });
    expect(summary.usb).toMatchObject({ finishedOffline: true, reportedAfterReconnect: true });

    // Both gateways: the application installed through the dispatcher and running now.
    for (const gateway of [TOP, CHILD]) {
      expect(device(gateway)).toMatchObject({ role: 'gateway', installedVersion: '1.1.0' });
      expect(summary.gatewayApps[gateway]?.running).toBe(true);
    }
    expect(device(CHILD).parentId).toBe(TOP);

    // Every step's feedback reached the dispatcher, for every job.
    for (const id of [TOP, CHILD, MCU]) {
      for (const job of device(id).jobs) {
        expect(job.steps, `${id} ${job.updateId}`).toEqual(expect.arrayContaining(['manifest:succeeded', 'download:succeeded', 'validate:succeeded', 'install:succeeded', 'commit:succeeded', 'job:succeeded']));
      }
    }

    // Each artifact left the cloud store once (the dispatcher's own count of what it served): the top cache fetched
    // exactly the artifacts' bytes, and the child's cache got the same bytes from the top cache, never from the cloud.
    expect(summary.cloudStore.artifacts).toHaveLength(3);
    for (const artifact of summary.cloudStore.artifacts) expect(artifact, artifact.file).toMatchObject({ requests: 1, completed: 1, bytesSent: artifact.bytes });
    const artifactBytes = summary.cloudStore.artifacts.reduce((sum, a) => sum + a.bytes, 0);
    expect(summary.caches[TOP]).toMatchObject({ upstream: 'cloud artifact store', upstreamBytes: artifactBytes, upstreamRequests: summary.cloudStore.artifacts.length });
    expect(summary.caches[CHILD]).toMatchObject({ upstream: `${TOP} contentCache`, upstreamBytes: artifactBytes });
  }, 480_000);
});
