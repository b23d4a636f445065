import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dispatcher } from '../src/app.ts';
import type { Harness, JsonLineProcess } from './support/harness.ts';
import { api, eventually, makeUpdate, startHarness, startDispatcher } from './support/harness.ts';

// Changing what a device runs after it was created: a device's own reassignment (forward, and back to an older
// version as an intended rollback), clearing it so the group's rule applies, and a group's new rule reaching its
// live devices at once, on the emulator with the stand-in orchestrator.

interface DeviceView {
  installedVersion: string | null;
  assignedUpdateId: string | null;
  assignedBy: string | null;
  currentJob: { jobId: string; updateId: string; state: string } | null;
}

describe('reassignment and group rollouts', () => {
  let harness: Harness;
  let dispatcher: Dispatcher;
  let orchestrator: JsonLineProcess;

  beforeAll(async () => {
    harness = await startHarness();
    await harness.createGateway('gw-r');
    orchestrator = await harness.startOrchestrator('gw-r');
    dispatcher = await startDispatcher(harness);
    for (const version of ['1.0.0', '1.1.0', '2.0.0']) expect((await api(dispatcher.url, 'POST', '/updates', makeUpdate(version))).status).toBe(201);
  }, 90_000);
  afterAll(async () => {
    await dispatcher?.close();
    await harness?.stop();
  });

  const device = async (id: string): Promise<DeviceView> => (await api(dispatcher.url, 'GET', `/devices/${id}`)).body as unknown as DeviceView;
  const finishedOn = (id: string, version: string): Promise<DeviceView> =>
    eventually(async () => {
      const view = await device(id);
      return view.currentJob?.state === 'succeeded' && view.installedVersion === version ? view : undefined;
    }, 30_000, `${id} on ${version}`);
  const deliveries = (id: string): Array<Record<string, unknown>> => orchestrator.events.filter((e) => e.type === 'delivery' && e.deviceId === id);

  it('moves a device to another update, back to an older one as a rollback, and setting the same one again changes nothing', async () => {
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 's-1', parentId: 'gw-r', updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(201);
    await finishedOn('s-1', '1.0.0');

    const forward = await api(dispatcher.url, 'PUT', '/devices/s-1/assignment', { updateId: 'Contoso/Sensor@1.1.0' });
    expect(forward.status).toBe(200);
    expect(forward.body.plan).toMatchObject({ planned: true, updateId: 'Contoso/Sensor@1.1.0' });
    await finishedOn('s-1', '1.1.0');

    // Back to 1.0.0: a new job (the first 1.0.0 job is done), flagged as an intended rollback for the device's policy.
    const back = await api(dispatcher.url, 'PUT', '/devices/s-1/assignment', { updateId: 'Contoso/Sensor@1.0.0' });
    expect(back.body.plan).toMatchObject({ planned: true });
    const backJob = (back.body.plan as { jobId: string }).jobId;
    await finishedOn('s-1', '1.0.0');
    const sent = deliveries('s-1');
    expect(sent.map((e) => [(e.updateId as { version: string }).version, e.rollback])).toEqual([['1.0.0', false], ['1.1.0', false], ['1.0.0', true]]);
    expect(new Set(sent.map((e) => e.jobId)).size).toBe(3);
    expect(sent.at(-1)?.jobId).toBe(backJob);

    const again = await api(dispatcher.url, 'PUT', '/devices/s-1/assignment', { updateId: 'Contoso/Sensor@1.0.0' });
    expect(again.body.plan).toMatchObject({ planned: false, reason: 'already-planned', jobId: backJob });
    const history = (await api(dispatcher.url, 'GET', '/devices/s-1/history')).body.history as Array<{ status: string; details?: string }>;
    expect(history.filter((h) => h.status === 'reassigned').map((h) => h.details)).toEqual([
      'assigned Contoso/Sensor@1.1.0 (was Contoso/Sensor@1.0.0)', 'assigned Contoso/Sensor@1.0.0 (was Contoso/Sensor@1.1.0)',
    ]);
  }, 120_000);

  it('rolls a group\'s new rule out to its live devices that follow it, and a device whose own update is cleared joins it', async () => {
    expect((await api(dispatcher.url, 'PUT', '/groups/line-r', { updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(200);
    for (const id of ['g-1', 'g-2']) expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: id, parentId: 'gw-r', group: 'line-r' })).status).toBe(201);
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'g-own', parentId: 'gw-r', group: 'line-r', updateId: 'Contoso/Sensor@1.1.0' })).status).toBe(201);
    await Promise.all([finishedOn('g-1', '1.0.0'), finishedOn('g-2', '1.0.0'), finishedOn('g-own', '1.1.0')]);

    const rollout = await api(dispatcher.url, 'PUT', '/groups/line-r', { updateId: 'Contoso/Sensor@2.0.0' });
    expect(rollout.body).toMatchObject({ rollout: { devices: 2, planned: 2, alreadyPlanned: 0, notLive: 0 } });
    await Promise.all([finishedOn('g-1', '2.0.0'), finishedOn('g-2', '2.0.0')]);
    // The device with its own update stays on it.
    expect((await device('g-own')).installedVersion).toBe('1.1.0');
    // The same rule again: nothing new.
    expect((await api(dispatcher.url, 'PUT', '/groups/line-r', { updateId: 'Contoso/Sensor@2.0.0' })).body).toMatchObject({ rollout: { planned: 0, alreadyPlanned: 2 } });

    const cleared = await api(dispatcher.url, 'DELETE', '/devices/g-own/assignment');
    expect(cleared.body).toMatchObject({ device: { assignedUpdateId: 'Contoso/Sensor@2.0.0', assignedBy: 'group' }, plan: { planned: true } });
    await finishedOn('g-own', '2.0.0');
  }, 120_000);

  it('refuses reassignments to unknown devices, unknown updates and malformed bodies with stable codes', async () => {
    const code = (r: { body: Record<string, unknown> }): string => (r.body.error as { code: string }).code;
    expect(code(await api(dispatcher.url, 'PUT', '/devices/nobody/assignment', { updateId: 'Contoso/Sensor@1.0.0' }))).toBe('DEVICE_NOT_FOUND');
    expect(code(await api(dispatcher.url, 'PUT', '/devices/s-1/assignment', { updateId: 'Contoso/Sensor@9.9.9' }))).toBe('UPDATE_NOT_FOUND');
    expect(code(await api(dispatcher.url, 'PUT', '/devices/s-1/assignment', { updateId: 5 }))).toBe('REQUEST_INVALID');
    expect(code(await api(dispatcher.url, 'PUT', '/devices/s-1/assignment', { updateId: 'Contoso/Sensor@1.0.0', extra: true }))).toBe('REQUEST_INVALID');
    expect(code(await api(dispatcher.url, 'DELETE', '/devices/nobody/assignment'))).toBe('DEVICE_NOT_FOUND');
  });
});
