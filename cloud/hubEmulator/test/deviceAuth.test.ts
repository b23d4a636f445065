import iotDevice from 'azure-iot-device';
import iotDeviceMqtt from 'azure-iot-device-mqtt';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatorFixture } from './support/emulatorFixture.ts';
import { startEmulator } from './support/emulatorFixture.ts';

const { Client: DeviceClient, Message, SharedAccessSignature } = iotDevice;
const { Mqtt } = iotDeviceMqtt;

// Conformance: who may connect, and what a connected client may publish and subscribe to. The negative protocol
// cases use mqtt.js (the MQTT library inside the device SDK) because the SDK cannot be made to misbehave.

function rawConnect(hub: EmulatorFixture, clientId: string, password: string): Promise<mqtt.MqttClient> {
  const { hostName } = hub.hubProcess.info;
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(`mqtts://${hostName}:8883`, {
      clientId,
      username: `${hostName}/${clientId}/?api-version=2021-04-12`,
      password,
      ca: hub.caPem,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    client.once('connect', () => resolve(client));
    client.once('error', (error) => {
      client.end(true);
      reject(error);
    });
  });
}

describe('device authentication and authorization', () => {
  let hub: EmulatorFixture;
  beforeAll(async () => {
    hub = await startEmulator();
  });
  afterAll(async () => {
    await hub?.stop();
  });

  const openWith = async (connectionString: string): Promise<void> => {
    const client = DeviceClient.fromConnectionString(connectionString, Mqtt);
    await client.setOptions({ ca: hub.caPem });
    try {
      await client.open();
    } finally {
      await client.close();
    }
  };

  it('accepts the primary and the secondary key', async () => {
    const { key } = await hub.createDevice('auth-ok');
    await openWith(hub.connectionString('auth-ok', key));
    const { responseBody } = await hub.registry.get('auth-ok');
    await openWith(hub.connectionString('auth-ok', responseBody.authentication?.symmetricKey?.secondaryKey ?? ''));
  });

  it('rejects a bad signature, an unknown identity and a disabled device', async () => {
    await hub.createDevice('auth-bad');
    const otherKey = Buffer.alloc(32, 7).toString('base64');
    await expect(openWith(hub.connectionString('auth-bad', otherKey))).rejects.toMatchObject({ name: 'UnauthorizedError' });
    await expect(openWith(hub.connectionString('auth-nobody', otherKey))).rejects.toMatchObject({ name: 'UnauthorizedError' });
    const { key } = await hub.createDevice('auth-disabled');
    const device = (await hub.registry.get('auth-disabled')).responseBody;
    await hub.registry.update({ ...device, status: 'disabled' });
    await expect(openWith(hub.connectionString('auth-disabled', key))).rejects.toMatchObject({ name: 'UnauthorizedError' });
  });

  it('rejects an expired token', async () => {
    const { key } = await hub.createDevice('auth-expired');
    const expired = SharedAccessSignature.create(hub.hubProcess.info.hostName, 'auth-expired', key, Math.floor(Date.now() / 1000) - 60);
    const client = DeviceClient.fromSharedAccessSignature(expired.toString(), Mqtt);
    await client.setOptions({ ca: hub.caPem });
    await expect(client.open()).rejects.toMatchObject({ name: 'UnauthorizedError' });
    await client.close();
  });

  it('refuses a client id that does not match the token', async () => {
    const a = await hub.createDevice('auth-a');
    await hub.createDevice('auth-b');
    const tokenForA = SharedAccessSignature.create(hub.hubProcess.info.hostName, 'auth-a', a.key, Math.floor(Date.now() / 1000) + 600);
    await expect(rawConnect(hub, 'auth-b', tokenForA.toString())).rejects.toThrow(/Not authorized/);
  });

  it('disconnects a client that publishes as another identity, and refuses its foreign subscriptions', async () => {
    const a = await hub.createDevice('auth-pub-a');
    await hub.createDevice('auth-pub-b');
    const token = SharedAccessSignature.create(hub.hubProcess.info.hostName, 'auth-pub-a', a.key, Math.floor(Date.now() / 1000) + 600).toString();

    const subscriber = await rawConnect(hub, 'auth-pub-a', token);
    const granted = await new Promise<mqtt.ISubscriptionGrant[]>((resolve, reject) =>
      subscriber.subscribe('devices/auth-pub-b/messages/devicebound/#', { qos: 1 }, (error, g) => (error ? reject(error) : resolve(g))),
    );
    expect(granted[0]?.qos).toBe(128);
    subscriber.end(true);

    const publisher = await rawConnect(hub, 'auth-pub-a', token);
    const closed = new Promise<void>((resolve) => publisher.once('close', () => resolve()));
    publisher.publish('devices/auth-pub-b/messages/events/', 'spoofed', { qos: 1 });
    await closed;
    publisher.end(true);
  });

  it('lets a new connection of the same identity take over the old one', async () => {
    const { key } = await hub.createDevice('auth-twice');
    const token = SharedAccessSignature.create(hub.hubProcess.info.hostName, 'auth-twice', key, Math.floor(Date.now() / 1000) + 600).toString();
    // The first connection is raw MQTT: the SDK would silently reconnect and take the identity back.
    const first = await rawConnect(hub, 'auth-twice', token);
    const dropped = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const second = await hub.openDevice('auth-twice', key);
    await dropped;
    first.end(true);
    await second.sendEvent(new Message('still connected'));
  });

  it('disconnects a client whose message exceeds 256 KB with its properties', async () => {
    const { key } = await hub.createDevice('auth-big');
    const token = SharedAccessSignature.create(hub.hubProcess.info.hostName, 'auth-big', key, Math.floor(Date.now() / 1000) + 600).toString();
    // The SDK refuses bodies over 256 KiB itself; body + properties over the limit only the hub can catch.
    const raw = await rawConnect(hub, 'auth-big', token);
    const closed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    raw.publish(`devices/auth-big/messages/events/padding=${'p'.repeat(10 * 1024)}`, Buffer.alloc(250 * 1024, 1), { qos: 1 });
    await closed;
    raw.end(true);
    const client = await hub.openDevice('auth-big', key);
    const message = new Message(Buffer.alloc(200 * 1024, 1));
    message.properties.add('padding', 'p'.repeat(10 * 1024));
    await client.sendEvent(message);
  });
});
