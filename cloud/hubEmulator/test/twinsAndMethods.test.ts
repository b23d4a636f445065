import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorFixture } from './support/emulatorFixture.ts';
import { eventually, startEmulator } from './support/emulatorFixture.ts';
import { updateReported } from './support/twinHelpers.ts';

// Conformance: twins (service and device side) and direct methods, including IoT Hub's limits and errors.

describe('twins', () => {
  let hub: EmulatorFixture;
  beforeAll(async () => {
    hub = await startEmulator();
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('pushes desired patches with versions to a connected device and reads reported properties back', async () => {
    const { key } = await hub.createDevice('twin-a');
    const client = await hub.openDevice('twin-a', key);
    const twin = await client.getTwin();
    const seen: Array<Record<string, unknown>> = [];
    twin.on('properties.desired', (delta: Record<string, unknown>) => seen.push(delta));

    const before = (await hub.registry.getTwin('twin-a')).responseBody;
    await hub.registry.updateTwin('twin-a', { tags: { site: 'plant-1' }, properties: { desired: { interval: 5, nested: { a: 1 } } } }, before.etag);
    const delta = await eventually(() => seen.find((d) => d.interval === 5), 10_000, 'desired patch');
    expect(delta.$version).toBe(2);
    expect(delta.nested).toEqual({ a: 1 });

    await updateReported(twin, { interval: 5, firmware: { version: '1.2.3' } });
    const after = (await hub.registry.getTwin('twin-a')).responseBody;
    expect(after.tags).toEqual({ site: 'plant-1' });
    expect(after.properties.reported.firmware).toEqual({ version: '1.2.3' });
    expect(after.properties.desired.$version).toBe(2);

    // null deletes a property, on both sides
    await hub.registry.updateTwin('twin-a', { properties: { desired: { nested: null } } }, '*');
    await updateReported(twin, { firmware: null });
    const cleared = (await hub.registry.getTwin('twin-a')).responseBody;
    expect(cleared.properties.desired.nested).toBeUndefined();
    expect(cleared.properties.reported.firmware).toBeUndefined();
    const fresh = await client.getTwin();
    expect(fresh.properties.desired.nested).toBeUndefined();
  });

  it('refuses a stale etag with 412', async () => {
    await hub.createDevice('twin-etag');
    const { etag } = (await hub.registry.getTwin('twin-etag')).responseBody;
    await hub.registry.updateTwin('twin-etag', { tags: { a: 1 } }, etag);
    await expect(hub.registry.updateTwin('twin-etag', { tags: { a: 2 } }, etag)).rejects.toMatchObject({ name: 'InvalidEtagError' });
    expect((await hub.registry.getTwin('twin-etag')).responseBody.tags).toEqual({ a: 1 });
  });

  it('enforces IoT Hub twin limits on the service side', async () => {
    await hub.createDevice('twin-limits');
    await expect(hub.registry.updateTwin('twin-limits', { properties: { desired: { s: 'x'.repeat(4097) } } }, '*')).rejects.toMatchObject({
      name: 'ArgumentError',
    });
    await expect(hub.registry.updateTwin('twin-limits', { properties: { desired: { 'a.b': 1 } } }, '*')).rejects.toMatchObject({
      name: 'ArgumentError',
    });
    const big: Record<string, string> = {};
    for (let i = 0; i < 10; i += 1) big[`k${i}`] = 'y'.repeat(4000);
    await expect(hub.registry.updateTwin('twin-limits', { properties: { desired: big } }, '*')).rejects.toThrow(/exceeds the limit of 32768/);
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 11; i += 1) deep = { d: deep };
    await expect(hub.registry.updateTwin('twin-limits', { properties: { desired: deep } }, '*')).rejects.toMatchObject({ name: 'ArgumentError' });
    await expect(hub.registry.updateTwin('twin-limits', { properties: { reported: { x: 1 } } }, '*')).rejects.toMatchObject({
      name: 'ArgumentError',
    });
    // Nothing of the refused patches was applied.
    expect((await hub.registry.getTwin('twin-limits')).responseBody.properties.desired.$version).toBe(1);
  });

  it('enforces IoT Hub twin limits on the device side', async () => {
    const { key } = await hub.createDevice('twin-dlimits');
    const client = await hub.openDevice('twin-dlimits', key);
    const twin = await client.getTwin();
    await expect(updateReported(twin, { s: 'x'.repeat(4097) })).rejects.toThrow(/longer than 4096/);
    const big: Record<string, string> = {};
    for (let i = 0; i < 10; i += 1) big[`k${i}`] = 'y'.repeat(4000);
    await expect(updateReported(twin, big)).rejects.toThrow(/exceeds the limit/);
    await updateReported(twin, { ok: true });
    expect((await hub.registry.getTwin('twin-dlimits')).responseBody.properties.reported).toMatchObject({ ok: true, $version: 2 });
  });

  it('gives module twins their own desired and reported sections', async () => {
    await hub.createDevice('twin-mod');
    const { key } = await hub.createModule('twin-mod', 'app');
    const client = await hub.openModule('twin-mod', 'app', key);
    const twin = await client.getTwin();
    const seen: Array<Record<string, unknown>> = [];
    twin.on('properties.desired', (delta: Record<string, unknown>) => seen.push(delta));
    await hub.registry.updateModuleTwin('twin-mod', 'app', { properties: { desired: { mode: 'fast' } } }, '*');
    await eventually(() => seen.find((d) => d.mode === 'fast'), 10_000, 'module desired patch');
    await updateReported(twin, { mode: 'fast' });
    expect((await hub.registry.getModuleTwin('twin-mod', 'app')).responseBody.properties.reported.mode).toBe('fast');
    expect((await hub.registry.getTwin('twin-mod')).responseBody.properties.reported.mode).toBeUndefined();
  });
});

describe('direct methods', () => {
  let hub: EmulatorFixture;
  beforeAll(async () => {
    hub = await startEmulator();
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('invokes a method on a device and returns its status and payload', async () => {
    const { key } = await hub.createDevice('m-dev');
    const client = await hub.openDevice('m-dev', key);
    client.onDeviceMethod('reboot', (request, response) => {
      void response.send(202, { accepted: true, echo: request.payload as unknown });
    });
    await eventually(async () => {
      try {
        return await hub.service.invokeDeviceMethod('m-dev', { methodName: 'reboot', payload: { delay: 1 }, responseTimeoutInSeconds: 5 });
      } catch {
        return undefined;
      }
    }, 10_000, 'method subscription');
    const { result } = (await hub.service.invokeDeviceMethod('m-dev', { methodName: 'reboot', payload: { delay: 2 }, responseTimeoutInSeconds: 5 })) as { result: unknown };
    expect(result).toEqual({ status: 202, payload: { accepted: true, echo: { delay: 2 } } });
  });

  it('invokes a method on a module', async () => {
    await hub.createDevice('m-host');
    const { key } = await hub.createModule('m-host', 'worker');
    const client = await hub.openModule('m-host', 'worker', key);
    client.onMethod('ping', (_request, response) => {
      void response?.send(200, 'pong');
    });
    const { result } = await eventually(async () => {
      try {
        return (await hub.service.invokeDeviceMethod('m-host', 'worker', { methodName: 'ping', responseTimeoutInSeconds: 5 })) as { result: unknown };
      } catch {
        return undefined;
      }
    }, 10_000, 'module method');
    expect(result).toEqual({ status: 200, payload: 'pong' });
  });

  it('answers 404 DeviceNotOnline for an offline device, 404 DeviceNotFound for an unknown one', async () => {
    await hub.createDevice('m-offline');
    const offline = await hub.service.invokeDeviceMethod('m-offline', { methodName: 'x', responseTimeoutInSeconds: 5 }).then(
      () => undefined,
      (error: unknown) => error as { responseBody?: string; response?: { statusCode?: number } },
    );
    expect(offline?.response?.statusCode).toBe(404);
    expect(offline?.responseBody).toContain('DeviceNotOnline');
    await expect(hub.service.invokeDeviceMethod('m-nobody', { methodName: 'x' })).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
  });

  it('waits up to connectTimeoutInSeconds for the device to come online', async () => {
    const { key } = await hub.createDevice('m-late');
    const call = hub.service.invokeDeviceMethod('m-late', { methodName: 'hello', responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 20 });
    const client = await hub.openDevice('m-late', key);
    client.onDeviceMethod('hello', (_request, response) => {
      void response.send(200, { late: true });
    });
    expect((await call).result).toEqual({ status: 200, payload: { late: true } });
  });

  it('answers 504 when the device does not respond in time', async () => {
    const { key } = await hub.createDevice('m-slow');
    const client = await hub.openDevice('m-slow', key);
    client.onDeviceMethod('slow', () => undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    await expect(hub.service.invokeDeviceMethod('m-slow', { methodName: 'slow', responseTimeoutInSeconds: 5 })).rejects.toMatchObject({
      name: 'GatewayTimeoutError',
    });
  }, 20_000);

  it('refuses a payload over 128 KB and bad timeouts', async () => {
    await hub.createDevice('m-big');
    await expect(hub.service.invokeDeviceMethod('m-big', { methodName: 'x', payload: 'z'.repeat(129 * 1024) })).rejects.toThrow(/131072/);
    await expect(hub.service.invokeDeviceMethod('m-big', { methodName: 'x', responseTimeoutInSeconds: 1000 })).rejects.toMatchObject({
      name: 'ArgumentError',
    });
  });
});
