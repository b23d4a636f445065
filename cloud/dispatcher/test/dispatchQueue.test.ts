import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDispatcher } from '../src/app.ts';
import type { Dispatcher } from '../src/app.ts';
import type { IdentityHub, MethodOutcome } from '../src/hubClient.ts';
import { api, eventually, makeKeys, makeUpdate } from './support/harness.ts';

// The delivery loop in process, with a scripted IoT Hub: what each orchestrator answer does to the job.

class ScriptedHub implements IdentityHub {
  readonly calls: string[] = [];
  readonly payloads: unknown[] = [];
  readonly twins: unknown[] = [];
  answers: Array<MethodOutcome | Error> = [];
  createDevice(): Promise<{ generationId: string }> {
    return Promise.resolve({ generationId: 'g' });
  }
  invokeModuleMethod(deviceId: string, moduleId: string, _method: string, payload: unknown): Promise<MethodOutcome> {
    this.calls.push(`${deviceId}/${moduleId}`);
    this.payloads.push(payload);
    const answer = this.answers.shift() ?? new Error('DeviceNotOnlineError: offline');
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer);
  }
  patchModuleDesired(_d: string, _m: string, desired: Record<string, unknown>): Promise<void> {
    this.twins.push(desired);
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe('DispatchQueue', () => {
  let dir: string;
  let dispatcher: Dispatcher;
  const hub = new ScriptedHub();
  const created = (deviceId: string, iotEdge = false): unknown[] => [{
    id: `c-${deviceId}`, eventType: 'Microsoft.Devices.DeviceCreated', eventTime: new Date().toISOString(), subject: `devices/${deviceId}`,
    data: { deviceId, twin: { deviceId, deviceScope: 'ms-azure-iot-edge://gw-0123', capabilities: { iotEdge } } },
  }];
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-queue-'));
    const keys = makeKeys(dir);
    dispatcher = await createDispatcher({
      hubConnectionString: 'unused', hub, dataDir: path.join(dir, 'data'), signingKey: keys.signingKey, trustStore: keys.trustStore,
      dispatch: { initialBackoffMs: 50, maxBackoffMs: 100 },
    });
    expect((await api(dispatcher.url, 'POST', '/updates', makeUpdate('1.0.0'))).status).toBe(201);
  });
  afterAll(async () => {
    await dispatcher?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('retries an offline module with backoff, writes the twin once, and stops when the orchestrator accepts', async () => {
    hub.answers = [new Error('offline'), new Error('offline'), { status: 200, payload: { accepted: true, disposition: 'queued' } }];
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'q-1', parentId: 'gw', updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(201);
    expect((await api(dispatcher.url, 'POST', '/events/eventgrid', created('q-1'))).status).toBe(200);
    const job = await eventually(async () => {
      const jobs = (await api(dispatcher.url, 'GET', '/devices/q-1/jobs')).body.jobs as Array<{ state: string; delivery: { attempts: number; twinWritten: boolean } }>;
      return jobs[0]?.state === 'delivered' ? jobs[0] : undefined;
    }, 10_000, 'q-1 delivered');
    expect(job.delivery.attempts).toBe(3);
    expect(job.delivery.twinWritten).toBe(true);
    expect(hub.twins).toHaveLength(1);
    expect(hub.calls.filter((c) => c === 'gw/otaOrchestrator')).toHaveLength(3);
  });

  it('fails the job at the manifest step when the orchestrator rejects it, and does not retry', async () => {
    hub.answers = [{ status: 400, payload: { jobId: 'x', accepted: false, disposition: 'rejected', resultCode: 0, extendedResultCode: 0x30000001, resultDetails: 'signature invalid' } }];
    const before = hub.calls.length;
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'q-2', parentId: 'gw', updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(201);
    expect((await api(dispatcher.url, 'POST', '/events/eventgrid', created('q-2'))).status).toBe(200);
    const failed = await eventually(async () => {
      const list = (await api(dispatcher.url, 'GET', '/status/failed')).body.failed as Array<{ deviceId: string; step: string; extendedResultCode: number; resultDetails: string }>;
      return list.find((f) => f.deviceId === 'q-2');
    }, 10_000, 'q-2 failed');
    expect(failed).toMatchObject({ step: 'manifest', extendedResultCode: 0x30000001, resultDetails: 'signature invalid' });
    // Delivered (not pending): the queue has nothing left to retry for it.
    const jobs = (await api(dispatcher.url, 'GET', '/devices/q-2/jobs')).body.jobs as Array<{ delivery: { state: string; attempts: number } }>;
    expect(jobs[0]!.delivery).toMatchObject({ state: 'delivered', attempts: 1 });
    expect(hub.calls.length - before).toBe(1);
  });

  it('sends a nested child gateway its job on its own orchestrator, and a leaf behind it to that child gateway', async () => {
    hub.answers = [{ status: 200, payload: { accepted: true, disposition: 'queued' } }];
    const before = hub.calls.length;
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'gw-child', parentId: 'gw', isGateway: true, updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(201);
    expect((await api(dispatcher.url, 'POST', '/events/eventgrid', created('gw-child', true))).status).toBe(200);
    await eventually(async () => {
      const jobs = (await api(dispatcher.url, 'GET', '/devices/gw-child/jobs')).body.jobs as Array<{ state: string }>;
      return jobs[0]?.state === 'delivered' ? true : undefined;
    }, 10_000, 'gw-child delivered');
    expect(hub.calls.slice(before)).toEqual(['gw-child/otaOrchestrator']);
    const delivery = hub.payloads[hub.payloads.length - 1] as { target: Record<string, unknown> };
    // Straight to the orchestrator that installs it: no hand-off through the parent.
    expect(delivery.target).toEqual({ deviceId: 'gw-child' });

    hub.answers = [{ status: 200, payload: { accepted: true, disposition: 'queued' } }];
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'leaf-1', parentId: 'gw-child', updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(201);
    expect((await api(dispatcher.url, 'POST', '/events/eventgrid', created('leaf-1'))).status).toBe(200);
    await eventually(async () => {
      const jobs = (await api(dispatcher.url, 'GET', '/devices/leaf-1/jobs')).body.jobs as Array<{ state: string }>;
      return jobs[0]?.state === 'delivered' ? true : undefined;
    }, 10_000, 'leaf-1 delivered');
    expect(hub.calls.slice(before)).toEqual(['gw-child/otaOrchestrator', 'gw-child/otaOrchestrator']);
    expect((hub.payloads[hub.payloads.length - 1] as { target: Record<string, unknown> }).target).toEqual({ deviceId: 'leaf-1' });
  });

  it('gives a device that is neither a gateway nor behind one no job', async () => {
    const before = hub.calls.length;
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'lonely', updateId: 'Contoso/Sensor@1.0.0' })).status).toBe(201);
    expect((await api(dispatcher.url, 'POST', '/events/eventgrid', created('lonely'))).status).toBe(200);
    const history = await eventually(async () => {
      const entries = (await api(dispatcher.url, 'GET', '/devices/lonely/history')).body.history as Array<{ status: string }>;
      return entries.some((h) => h.status === 'noGateway') ? entries : undefined;
    }, 10_000, 'lonely noGateway');
    expect(history.some((h) => h.status === 'noGateway')).toBe(true);
    expect((await api(dispatcher.url, 'GET', '/devices/lonely/jobs')).body.jobs).toEqual([]);
    expect(hub.calls.length).toBe(before);
  });
});
