import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Harness, JsonLineProcess } from './support/harness.ts';
import { api, eventually, freePort, makeUpdate, startHarness } from './support/harness.ts';

// The dispatcher as `npm run dispatcher` runs it (main.ts, its own process, NODE_EXTRA_CA_CERTS for the hub),
// killed with SIGKILL after it received the create event and recorded the delivery but before the orchestrator
// answered. A new process on the same data directory must finish the job: the delivery was committed before it
// was attempted, the job id is the same, and the Event Hubs consumer resumes from its SQLite checkpoints.

describe('dispatcher killed between the event and the delivery', () => {
  let harness: Harness;
  let orchestrator: JsonLineProcess;

  beforeAll(async () => {
    harness = await startHarness();
    await harness.createGateway('gw-k');
    // The orchestrator holds its answer, so the kill lands while the delivery is in flight.
    orchestrator = await harness.startOrchestrator('gw-k', { STAND_IN_REPLY_DELAY_MS: '120000' });
  });
  afterAll(async () => {
    await harness?.stop();
  });

  it('finishes the job after a restart on the same data directory', async () => {
    const dataDir = path.join(harness.dir, 'dispatcher-data');
    const first = await harness.startDispatcherProcess(dataDir, await freePort());
    const firstUrl = /dispatcher ready on (\S+)/.exec(String(first.events.find((e) => e.type === 'line')?.line))![1]!;
    expect((await api(firstUrl, 'POST', '/updates', makeUpdate('3.1.0'))).status).toBe(201);
    expect((await api(firstUrl, 'POST', '/devices', { deviceId: 'mcu-k1', parentId: 'gw-k', updateId: 'Contoso/Sensor@3.1.0' })).status).toBe(201);
    await orchestrator.waitFor((e) => e.type === 'methodCall', 'applyUpdate in flight', 30_000);
    const recorded = (await api(firstUrl, 'GET', '/devices/mcu-k1/jobs')).body.jobs as Array<{ jobId: string; state: string }>;
    expect(recorded).toHaveLength(1);
    expect(recorded[0]!.state).toBe('pending');
    await first.stop('SIGKILL');

    orchestrator.send({ cmd: 'set', replyDelayMs: 0, id: 1 });
    await orchestrator.waitFor((e) => e.type === 'result' && e.id === 1, 'orchestrator answers at once');
    // Another port: the recorded delivery's download URLs are issued again from the new address when it is sent.
    const second = await harness.startDispatcherProcess(dataDir, await freePort());
    const secondUrl = /dispatcher ready on (\S+)/.exec(String(second.events.find((e) => e.type === 'line')?.line))![1]!;
    const finished = await eventually(async () => {
      const jobs = (await api(secondUrl, 'GET', '/devices/mcu-k1/jobs')).body.jobs as Array<{ jobId: string; state: string }>;
      return jobs[0]?.state === 'succeeded' ? jobs : undefined;
    }, 40_000, 'mcu-k1 succeeded after the restart');
    expect(finished).toHaveLength(1);
    expect(finished[0]!.jobId).toBe(recorded[0]!.jobId);
    const device = (await api(secondUrl, 'GET', '/devices/mcu-k1')).body;
    expect(device.installedVersion).toBe('3.1.0');
    expect(orchestrator.events.filter((e) => e.type === 'delivery' && e.deviceId === 'mcu-k1')).toHaveLength(1);
    await second.stop();
    expect(second.child.exitCode).toBe(0);
  }, 120_000);
});
