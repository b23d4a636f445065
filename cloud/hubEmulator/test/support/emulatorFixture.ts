import iotDevice from 'azure-iot-device';
import iotDeviceMqtt from 'azure-iot-device-mqtt';
import iothub from 'azure-iothub';
import { readFileSync } from 'node:fs';
import type { HubProcess } from '../../src/index.ts';
import { HubFaults, startHubProcess } from '../../src/index.ts';

const { Client: DeviceClient, ModuleClient } = iotDevice;
const { Mqtt } = iotDeviceMqtt;
const { Registry, Client: ServiceClient } = iothub;

export type DeviceClientInstance = InstanceType<typeof DeviceClient>;
export type ModuleClientInstance = InstanceType<typeof ModuleClient>;
export type RegistryInstance = InstanceType<typeof Registry>;

/** The identity fields the SDK's `Device` type leaves out (nested-edge scopes). */
interface ScopedDevice {
  deviceScope?: string;
  parentScopes?: string[];
  authentication?: { symmetricKey?: { primaryKey?: string } };
}

/** A real emulator process plus the SDK clients a conformance test needs; everything opened is closed by stop(). */
export interface EmulatorFixture {
  readonly hubProcess: HubProcess;
  readonly registry: RegistryInstance;
  readonly service: InstanceType<typeof ServiceClient>;
  readonly faults: HubFaults;
  readonly caPem: string;
  connectionString(deviceId: string, key: string, moduleId?: string, gatewayHostName?: string): string;
  createDevice(deviceId: string, options?: { edge?: boolean; parent?: string }): Promise<{ deviceId: string; key: string; scope: string }>;
  createModule(deviceId: string, moduleId: string): Promise<{ key: string }>;
  openDevice(deviceId: string, key: string, gatewayHostName?: string): Promise<DeviceClientInstance>;
  openModule(deviceId: string, moduleId: string, key: string): Promise<ModuleClientInstance>;
  track<T extends { close: () => Promise<unknown> }>(client: T): T;
  stop(): Promise<void>;
}

export async function startEmulator(options: { eventGridWebhooks?: string[] } = {}): Promise<EmulatorFixture> {
  const caDir = process.env.EDGE_OTA_TEST_CA_DIR;
  if (!caDir) throw new Error('EDGE_OTA_TEST_CA_DIR is not set: run the tests through vitest (test/setup/globalSetup.ts)');
  const hubProcess = await startHubProcess({ caDir, eventGridWebhooks: options.eventGridWebhooks });
  const caPem = readFileSync(hubProcess.info.caFile, 'utf8');
  const registry = Registry.fromConnectionString(hubProcess.info.serviceConnectionString);
  const service = ServiceClient.fromConnectionString(hubProcess.info.serviceConnectionString);
  const opened: Array<{ close: () => Promise<unknown> }> = [];
  const host = hubProcess.info.hostName;
  const fixture: EmulatorFixture = {
    hubProcess,
    registry,
    service,
    faults: new HubFaults(hubProcess.info, caPem),
    caPem,
    connectionString(deviceId, key, moduleId, gatewayHostName) {
      return [`HostName=${host}`, `DeviceId=${deviceId}`, ...(moduleId ? [`ModuleId=${moduleId}`] : []), `SharedAccessKey=${key}`,
        ...(gatewayHostName ? [`GatewayHostName=${gatewayHostName}`] : [])].join(';');
    },
    async createDevice(deviceId, { edge = false, parent } = {}) {
      let parentScope: string | undefined;
      if (parent) parentScope = ((await registry.get(parent)).responseBody as ScopedDevice).deviceScope;
      const body: Record<string, unknown> = { deviceId, capabilities: { iotEdge: edge } };
      if (parentScope) {
        if (edge) body.parentScopes = [parentScope];
        else body.deviceScope = parentScope;
      }
      const created = (await registry.create(body as unknown as Parameters<RegistryInstance['create']>[0])).responseBody as ScopedDevice;
      return { deviceId, key: created.authentication?.symmetricKey?.primaryKey ?? '', scope: created.deviceScope ?? '' };
    },
    async createModule(deviceId, moduleId) {
      const created = (await registry.addModule({ deviceId, moduleId })).responseBody as ScopedDevice;
      return { key: created.authentication?.symmetricKey?.primaryKey ?? '' };
    },
    async openDevice(deviceId, key, gatewayHostName) {
      const client = DeviceClient.fromConnectionString(fixture.connectionString(deviceId, key, undefined, gatewayHostName), Mqtt);
      await client.setOptions({ ca: caPem });
      await client.open();
      return fixture.track(client);
    },
    async openModule(deviceId, moduleId, key) {
      const client = ModuleClient.fromConnectionString(fixture.connectionString(deviceId, key, moduleId), Mqtt);
      await client.setOptions({ ca: caPem });
      await client.open();
      return fixture.track(client);
    },
    track(client) {
      opened.push(client);
      return client;
    },
    async stop() {
      await Promise.allSettled(opened.map((c) => c.close()));
      await hubProcess.stop();
    },
  };
  return fixture;
}

/** Polls `check` until it returns a value (bounded: never waits longer than `timeoutMs`). */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
