import iothub from 'azure-iothub';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorFixture } from './support/emulatorFixture.ts';
import { startEmulator } from './support/emulatorFixture.ts';

// Conformance: the identity registry as `azure-iothub`'s Registry uses it.

interface ScopedDevice {
  deviceId: string;
  etag: string;
  status: string;
  deviceScope?: string;
  parentScopes?: string[];
  capabilities?: { iotEdge: boolean };
  authentication: { symmetricKey: { primaryKey: string; secondaryKey: string } };
}

describe('registry (azure-iothub Registry)', () => {
  let hub: EmulatorFixture;
  beforeAll(async () => {
    hub = await startEmulator();
  });
  afterAll(async () => {
    await hub?.stop();
  });

  it('creates a device with generated SAS keys and reads it back', async () => {
    const created = (await hub.registry.create({ deviceId: 'reg-a' })).responseBody as unknown as ScopedDevice;
    expect(created.deviceId).toBe('reg-a');
    expect(created.status).toBe('enabled');
    expect(Buffer.from(created.authentication.symmetricKey.primaryKey, 'base64')).toHaveLength(32);
    expect(created.authentication.symmetricKey.secondaryKey).not.toBe(created.authentication.symmetricKey.primaryKey);
    const fetched = (await hub.registry.get('reg-a')).responseBody as unknown as ScopedDevice;
    expect(fetched.etag).toBe(created.etag);
    const listed = (await hub.registry.list()).responseBody.map((d) => d.deviceId);
    expect(listed).toContain('reg-a');
  });

  it('keeps caller-supplied keys', async () => {
    const primaryKey = Buffer.alloc(32, 1).toString('base64');
    const secondaryKey = Buffer.alloc(32, 2).toString('base64');
    const created = (await hub.registry.create({ deviceId: 'reg-keys', authentication: { symmetricKey: { primaryKey, secondaryKey } } }))
      .responseBody as unknown as ScopedDevice;
    expect(created.authentication.symmetricKey).toEqual({ primaryKey, secondaryKey });
  });

  it('refuses a duplicate, an unknown device, and malformed ids and keys with IoT Hub errors', async () => {
    await hub.registry.create({ deviceId: 'reg-dup' });
    await expect(hub.registry.create({ deviceId: 'reg-dup' })).rejects.toMatchObject({ name: 'DeviceAlreadyExistsError' });
    await expect(hub.registry.get('no-such-device')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    await expect(hub.registry.create({ deviceId: 'bad/id' })).rejects.toMatchObject({ name: 'ArgumentError' });
    await expect(hub.registry.create({ deviceId: 'x'.repeat(129) })).rejects.toMatchObject({ name: 'ArgumentError' });
    await expect(
      hub.registry.create({ deviceId: 'reg-badkey', authentication: { symmetricKey: { primaryKey: 'not base64!', secondaryKey: '' } } }),
    ).rejects.toMatchObject({ name: 'ArgumentError' });
  });

  it('updates with If-Match and rejects a stale etag', async () => {
    const created = (await hub.registry.create({ deviceId: 'reg-upd' })).responseBody as unknown as ScopedDevice;
    const disabled = (await hub.registry.update({ ...created, status: 'disabled' })).responseBody as unknown as ScopedDevice;
    expect(disabled.status).toBe('disabled');
    expect(disabled.etag).not.toBe(created.etag);
    // Registry.updateModule sends the module's etag in If-Match: a stale one must be refused with 412.
    await hub.registry.addModule({ deviceId: 'reg-upd', moduleId: 'm' });
    const module = (await hub.registry.getModule('reg-upd', 'm')).responseBody;
    await hub.registry.updateModule({ ...module, managedBy: 'first' });
    await expect(hub.registry.updateModule({ ...module, managedBy: 'second' })).rejects.toMatchObject({ name: 'InvalidEtagError' });
    expect((await hub.registry.getModule('reg-upd', 'm')).responseBody.managedBy).toBe('first');
  });

  it('deletes a device and its modules', async () => {
    await hub.registry.create({ deviceId: 'reg-del' });
    await hub.registry.addModule({ deviceId: 'reg-del', moduleId: 'm1' });
    await hub.registry.delete('reg-del');
    await expect(hub.registry.get('reg-del')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    await expect(hub.registry.getModule('reg-del', 'm1')).rejects.toThrow();
    await expect(hub.registry.delete('reg-del')).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
  });

  it('creates edge devices with their system modules and scopes, and children under them', async () => {
    const edge = (await hub.registry.create({ deviceId: 'gw-top', capabilities: { iotEdge: true } })).responseBody as unknown as ScopedDevice;
    expect(edge.capabilities?.iotEdge).toBe(true);
    expect(edge.deviceScope).toMatch(/^ms-azure-iot-edge:\/\/gw-top-/);
    const modules = (await hub.registry.getModulesOnDevice('gw-top')).responseBody.map((m) => m.moduleId).sort();
    expect(modules).toEqual(['$edgeAgent', '$edgeHub']);

    const nested = (await hub.registry.create({ deviceId: 'gw-child', capabilities: { iotEdge: true }, parentScopes: [edge.deviceScope] }))
      .responseBody as unknown as ScopedDevice;
    expect(nested.parentScopes).toEqual([edge.deviceScope]);
    expect(nested.deviceScope).not.toBe(edge.deviceScope);

    const leaf = (await hub.registry.create({ deviceId: 'leaf-1', deviceScope: nested.deviceScope })).responseBody as unknown as ScopedDevice;
    expect(leaf.deviceScope).toBe(nested.deviceScope);
    expect(leaf.parentScopes).toEqual([nested.deviceScope]);

    await expect(hub.registry.create({ deviceId: 'orphan', deviceScope: 'ms-azure-iot-edge://nobody-1' })).rejects.toMatchObject({
      name: 'ArgumentError',
    });
  });

  it('manages module identities', async () => {
    await hub.registry.create({ deviceId: 'reg-mod' });
    const added = (await hub.registry.addModule({ deviceId: 'reg-mod', moduleId: 'app' })).responseBody as { moduleId: string; authentication: unknown };
    expect(added.moduleId).toBe('app');
    await expect(hub.registry.addModule({ deviceId: 'reg-mod', moduleId: 'app' })).rejects.toMatchObject({ name: 'DeviceAlreadyExistsError' });
    await expect(hub.registry.addModule({ deviceId: 'missing', moduleId: 'app' })).rejects.toMatchObject({ name: 'DeviceNotFoundError' });
    expect((await hub.registry.getModule('reg-mod', 'app')).responseBody.moduleId).toBe('app');
    await hub.registry.removeModule('reg-mod', 'app');
    expect((await hub.registry.getModulesOnDevice('reg-mod')).responseBody).toEqual([]);
  });

  it('rejects a service token signed with the wrong key', async () => {
    const wrong = hub.hubProcess.info.serviceConnectionString.replace(/SharedAccessKey=[^;]+/, `SharedAccessKey=${Buffer.alloc(32, 9).toString('base64')}`);
    const registry = iothub.Registry.fromConnectionString(wrong);
    await expect(registry.list()).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });
});
