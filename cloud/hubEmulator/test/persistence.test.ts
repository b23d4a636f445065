import iotDevice from 'azure-iot-device';
import iotDeviceMqtt from 'azure-iot-device-mqtt';
import iothub from 'azure-iothub';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { HubProcess } from '../src/index.ts';
import { startHubProcess } from '../src/index.ts';

const { Client: DeviceClient } = iotDevice;
const { Mqtt } = iotDeviceMqtt;

// A restarted emulator keeps its identities, keys, twins and service credentials.

describe('persistence across restarts', () => {
  const running: HubProcess[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((p) => p.stop()));
  });

  it('keeps identities, keys and twins in the state directory', async () => {
    const stateDir = mkdtempSync(path.join(tmpdir(), 'hub-persist-'));
    const caDir = process.env.EDGE_OTA_TEST_CA_DIR;
    const first = await startHubProcess({ stateDir, caDir });
    running.push(first);
    const registry = iothub.Registry.fromConnectionString(first.info.serviceConnectionString);
    const created = await registry.create({ deviceId: 'keeper' });
    const key = created.responseBody.authentication?.symmetricKey?.primaryKey ?? '';
    await registry.updateTwin('keeper', { tags: { kept: true }, properties: { desired: { v: 1 } } }, '*');
    await first.stop();
    running.pop();

    const second = await startHubProcess({ stateDir, caDir });
    running.push(second);
    expect(second.info.serviceConnectionString.split(';').slice(1)).toEqual(first.info.serviceConnectionString.split(';').slice(1));
    const registryAgain = iothub.Registry.fromConnectionString(second.info.serviceConnectionString);
    const twin = (await registryAgain.getTwin('keeper')).responseBody;
    expect(twin.tags).toEqual({ kept: true });
    expect(twin.properties.desired.v).toBe(1);

    const client = DeviceClient.fromConnectionString(`HostName=${second.info.hostName};DeviceId=keeper;SharedAccessKey=${key}`, Mqtt);
    await client.setOptions({ ca: readFileSync(second.info.caFile, 'utf8') });
    await client.open();
    expect((await client.getTwin()).properties.desired.v).toBe(1);
    await client.close();
  });

  it('exits non-zero with a clear message when its address is taken', async () => {
    const caDir = process.env.EDGE_OTA_TEST_CA_DIR;
    const first = await startHubProcess({ caDir });
    running.push(first);
    await expect(startHubProcess({ caDir, address: first.info.address })).rejects.toThrow(/could not start: .*EADDRINUSE/);
  });
});
