import iotDevice from 'azure-iot-device';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployModules } from './support/edgeDeployment.ts';
import type { DeviceClientInstance, EmulatorFixture } from './support/emulatorFixture.ts';
import { eventually, startEmulator } from './support/emulatorFixture.ts';
import type { EventGridSink } from './support/eventGridSink.ts';
import { startEventGridSink } from './support/eventGridSink.ts';
import type { ModuleProcess } from './support/moduleProcess.ts';
import { edgeModuleEnvironment, startModuleProcess } from './support/moduleProcess.ts';

const { Message } = iotDevice;

// Fault injection: dropped connections, and an edge device cut off from its parent/the cloud. While cut off,
// routes between its own modules keep working and edgeHub holds everything bound for the cloud; when the link
// returns, held messages arrive in order, reported properties sync and held desired patches are delivered.

describe('faults', () => {
  let sink: EventGridSink;
  let hub: EmulatorFixture;
  let generations: Record<string, string>;
  let sender: ModuleProcess;
  let receiver: ModuleProcess;
  let leaf: DeviceClientInstance;
  const startModule = (moduleId: string): Promise<ModuleProcess> =>
    startModuleProcess(edgeModuleEnvironment(hub.hubProcess.info, 'gw', moduleId, generations[moduleId] ?? ''));

  beforeAll(async () => {
    sink = await startEventGridSink();
    hub = await startEmulator({ eventGridWebhooks: [sink.url] });
    await hub.createDevice('gw', { edge: true });
    await hub.createDevice('gw-child', { edge: true, parent: 'gw' });
    generations = await deployModules(hub, 'gw', ['sender', 'receiver'], {
      local: 'FROM /messages/modules/sender/outputs/out INTO BrokeredEndpoint("/modules/receiver/inputs/in")',
      up: 'FROM /messages/modules/sender/outputs/up INTO $upstream',
      children: 'FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream',
    });
    [sender, receiver] = await Promise.all([startModule('sender'), startModule('receiver')]);
    const { key } = await hub.createDevice('nested-leaf', { parent: 'gw-child' });
    leaf = await hub.openDevice('nested-leaf', key, hub.hubProcess.info.hostName);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([sender?.stop(), receiver?.stop()]);
    await hub?.stop();
    await sink?.close();
  });

  it('drops a connection on request; the SDK reconnects and routing resumes', async () => {
    expect(await hub.faults.dropConnection('gw', 'receiver')).toBe(true);
    await eventually(async () => {
      const reply = await sender.command({ cmd: 'send', output: 'out', body: 'after-drop' });
      return reply.error === undefined ? reply : undefined;
    }, 10_000, 'send after drop');
    await receiver.waitFor((e) => e.type === 'input' && e.body === 'after-drop', 'input after the drop', 30_000);
    expect(await hub.faults.dropConnection('gw', 'nobody')).toBe(false);
  });

  it('holds module inputs for a module that is down and delivers them when it comes back', async () => {
    await receiver.stop();
    await sender.command({ cmd: 'send', output: 'out', body: 'while-down-1' });
    await sender.command({ cmd: 'send', output: 'out', body: 'while-down-2' });
    receiver = await startModule('receiver');
    await receiver.waitFor((e) => e.type === 'input' && e.body === 'while-down-2', 'held inputs');
    expect(receiver.events.filter((e) => e.type === 'input').map((e) => e.body)).toEqual(['while-down-1', 'while-down-2']);
  });

  it('keeps local routes working while the gateway is cut off and forwards held cloud traffic in order afterwards', async () => {
    await hub.faults.setUpstream('gw', false);

    // Cloud -> gateway: the modules and the nested leaf look offline.
    const offline = await hub.service.invokeDeviceMethod('gw', 'sender', { methodName: 'echo', responseTimeoutInSeconds: 5 }).catch((e: unknown) => e);
    expect((offline as { responseBody?: string }).responseBody).toContain('DeviceNotOnline');
    await eventually(
      () => sink.ofType('DeviceDisconnected').find((e) => e.subject === 'devices/gw' && e.data.moduleId === 'sender'),
      10_000,
      'sender seen as disconnected',
    );

    // A desired patch made now is held: a routed input sent after it reaches the receiver first.
    await hub.registry.updateModuleTwin('gw', 'receiver', { properties: { desired: { whileCut: true } } }, '*');
    for (const body of ['up-1', 'up-2', 'up-3']) await sender.command({ cmd: 'send', output: 'up', body });
    const leafMessage = new Message('leaf-while-cut');
    leafMessage.properties.add('marker', 'leaf-while-cut');
    await leaf.sendEvent(leafMessage);
    await sender.command({ cmd: 'send', output: 'out', body: 'local-while-cut' });
    await receiver.waitFor((e) => e.type === 'input' && e.body === 'local-while-cut', 'local route while cut off');
    expect(receiver.events.some((e) => e.type === 'desired' && (e.patch as { whileCut?: boolean }).whileCut === true)).toBe(false);

    // Reported properties are accepted locally but reach the hub only after the link returns.
    const reported = await receiver.command({ cmd: 'report', patch: { offlineNote: 'written while cut' } });
    expect(reported.error).toBeUndefined();
    expect((await hub.registry.getModuleTwin('gw', 'receiver')).responseBody.properties.reported.offlineNote).toBeUndefined();

    const restoredAt = new Date().toISOString();
    await hub.faults.setUpstream('gw', true);

    await receiver.waitFor((e) => e.type === 'desired' && (e.patch as { whileCut?: boolean }).whileCut === true, 'held desired patch');
    expect((await hub.registry.getModuleTwin('gw', 'receiver')).responseBody.properties.reported.offlineNote).toBe('written while cut');
    const held = await eventually(() => {
      const got = sink
        .ofType('DeviceTelemetry')
        .filter((e) => e.data.systemProperties && (e.data.systemProperties as Record<string, string>)['iothub-connection-module-id'] === 'sender')
        .map((e) => ({ body: Buffer.from(e.data.body as string, 'base64').toString(), time: e.eventTime }))
        .filter((e) => e.body.startsWith('up-'));
      return got.length === 3 ? got : undefined;
    }, 15_000, 'held upstream messages');
    expect(held.map((e) => e.body)).toEqual(['up-1', 'up-2', 'up-3']);
    for (const e of held) expect(e.time >= restoredAt).toBe(true);
    const fromLeaf = await eventually(
      () => sink.ofType('DeviceTelemetry').find((e) => (e.data.properties as Record<string, string>).marker === 'leaf-while-cut'),
      15_000,
      'nested leaf message through both gateways',
    );
    expect(fromLeaf.subject).toBe('devices/nested-leaf');
    expect(fromLeaf.eventTime >= restoredAt).toBe(true);
  });

  it('refuses to cut the upstream of a device that is not an edge device', async () => {
    await hub.createDevice('plain');
    await expect(hub.faults.setUpstream('plain', false)).rejects.toThrow(/not an IoT Edge device/);
  });
});
