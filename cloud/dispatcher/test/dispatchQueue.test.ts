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
  readonly twins: unknown[] = [];
  answers: Array<MethodOutcome | Error> = [];
  createDevice(): Promise<{ generationId: string }> {
    return Promise.resolve({ generationId: 'g' });
  }
  invokeModuleMethod(deviceId: string, moduleId: string): Promise<MethodOutcome> {
    this.calls.push(`${deviceId}/${moduleId}`);
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
  const created = (deviceId: string): unknown[] => [{
    id: `c-${deviceId}`, eventType: 'Microsoft.Devices.DeviceCreated', eventTime: new Date().toISOString(), subject: `devices/${deviceId}`,
    data: { deviceId, twin: { deviceId, deviceScope: 'ms-azure-iot-edge://gw-0123', capabilities: { iotEdge: false } } },
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
});
