import iotDevice from 'azure-iot-device';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorFixture } from './support/emulatorFixture.ts';
import { startEmulator } from './support/emulatorFixture.ts';
import { updateReported } from './support/twinHelpers.ts';

const { Message } = iotDevice;

describe('smoke', () => {
  let emulator: EmulatorFixture;
  beforeAll(async () => {
    emulator = await startEmulator();
  });
  afterAll(async () => {
    await emulator?.stop();
  });

  it('creates a device and connects it over MQTT', async () => {
    const { key } = await emulator.createDevice('smoke-1');
    const client = await emulator.openDevice('smoke-1', key);
    const twin = await client.getTwin();
    expect(twin.properties.desired.$version).toBe(1);
    await updateReported(twin, { fw: '1.0' });
    await client.sendEvent(new Message('hello'));
    const { responseBody } = await emulator.registry.getTwin('smoke-1');
    expect(responseBody.properties.reported.fw).toBe('1.0');
  });
});
