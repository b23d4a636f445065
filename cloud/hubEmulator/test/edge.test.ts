import iotDevice from 'azure-iot-device';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployModules } from './support/edgeDeployment.ts';
import type { EmulatorFixture } from './support/emulatorFixture.ts';
import { eventually, startEmulator } from './support/emulatorFixture.ts';
import type { EventGridSink } from './support/eventGridSink.ts';
import { startEventGridSink } from './support/eventGridSink.ts';
import type { ModuleProcess } from './support/moduleProcess.ts';
import { edgeModuleEnvironment, startModuleProcess } from './support/moduleProcess.ts';

const { Message } = iotDevice;

// Conformance: the IoT Edge side. Module processes get only aziot-edged's environment and connect with
// ModuleClient.fromEnvironment(Mqtt); the deployment's routes decide where their outputs go.

describe('IoT Edge: modules, routes, workload API, gateways', () => {
  let sink: EventGridSink;
  let hub: EmulatorFixture;
  let sender: ModuleProcess;
  let receiver: ModuleProcess;
  beforeAll(async () => {
    sink = await startEventGridSink();
    hub = await startEmulator({ eventGridWebhooks: [sink.url] });
    await hub.createDevice('gw', { edge: true });
    const generations = await deployModules(hub, 'gw', ['sender', 'receiver'], {
      toReceiver: `FROM /messages/modules/sender/outputs/out WHERE kind = 'x' INTO BrokeredEndpoint("/modules/receiver/inputs/in")`,
      modulesUp: 'FROM /messages/modules/sender/outputs/up INTO $upstream',
      leavesUp: 'FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream',
    });
    const start = (moduleId: string): Promise<ModuleProcess> =>
      startModuleProcess(edgeModuleEnvironment(hub.hubProcess.info, 'gw', moduleId, generations[moduleId] ?? ''));
    [sender, receiver] = await Promise.all([start('sender'), start('receiver')]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([sender?.stop(), receiver?.stop()]);
    await hub?.stop();
    await sink?.close();
  });

  it('creates the deployment modules and keeps the deployment in the system module twins', async () => {
    const modules = (await hub.registry.getModulesOnDevice('gw')).responseBody.map((m) => m.moduleId).sort();
    expect(modules).toEqual(['$edgeAgent', '$edgeHub', 'receiver', 'sender']);
    const edgeHub = (await hub.registry.getModuleTwin('gw', '$edgeHub')).responseBody;
    expect(Object.keys(edgeHub.properties.desired.routes as object)).toEqual(['toReceiver', 'modulesUp', 'leavesUp']);
  });

  it('delivers desired-property changes made with azure-iothub to both modules', async () => {
    await hub.registry.updateModuleTwin('gw', 'sender', { properties: { desired: { rate: 3 } } }, '*');
    await hub.registry.updateModuleTwin('gw', 'receiver', { properties: { desired: { threshold: 7 } } }, '*');
    const s = await sender.waitFor((e) => e.type === 'desired' && (e.patch as { rate?: number }).rate === 3, 'sender desired');
    const r = await receiver.waitFor((e) => e.type === 'desired' && (e.patch as { threshold?: number }).threshold === 7, 'receiver desired');
    expect((s.patch as { $version: number }).$version).toBe(2);
    expect((r.patch as { $version: number }).$version).toBe(2);
  });

  it('routes a module output to another module input, filtered by WHERE, in order', async () => {
    for (const [body, kind] of [['one', 'x'], ['skip', 'y'], ['two', 'x']] as const) {
      const reply = await sender.command({ cmd: 'send', output: 'out', body, properties: { kind } });
      expect(reply.error).toBeUndefined();
    }
    await receiver.waitFor((e) => e.type === 'input' && e.body === 'two', 'second routed input');
    const inputs = receiver.events.filter((e) => e.type === 'input');
    expect(inputs.map((e) => e.body)).toEqual(['one', 'two']);
    expect(inputs[0]).toMatchObject({ inputName: 'in', properties: { kind: 'x' } });
  });

  it('sends module outputs routed to $upstream to the cloud', async () => {
    await sender.command({ cmd: 'send', output: 'up', body: 'to the cloud', properties: { step: 'download' } });
    const event = await eventually(
      () => sink.ofType('DeviceTelemetry').find((e) => (e.data.properties as Record<string, string>).step === 'download'),
      10_000,
      'upstream telemetry',
    );
    expect(event.data.systemProperties).toMatchObject({ 'iothub-connection-device-id': 'gw', 'iothub-connection-module-id': 'sender' });
    expect(Buffer.from(event.data.body as string, 'base64').toString()).toBe('to the cloud');
  });

  it('lets a module invoke a method on another module through edgeHub', async () => {
    const reply = await sender.command({ cmd: 'invoke', deviceId: 'gw', moduleId: 'receiver', methodName: 'echo', payload: { n: 42 } });
    expect(reply.error).toBeUndefined();
    expect(reply.result).toMatchObject({ status: 200, payload: { echoed: { n: 42 }, by: 'receiver' } });
  });

  it('connects a leaf device through its gateway and routes its telemetry', async () => {
    const { key } = await hub.createDevice('leaf-sensor', { parent: 'gw' });
    const leaf = await hub.openDevice('leaf-sensor', key, hub.hubProcess.info.hostName);
    const message = new Message('leaf reading');
    message.properties.add('source', 'leaf');
    await leaf.sendEvent(message);
    const event = await eventually(
      () => sink.ofType('DeviceTelemetry').find((e) => (e.data.properties as Record<string, string>).source === 'leaf'),
      10_000,
      'leaf telemetry',
    );
    expect(event.subject).toBe('devices/leaf-sensor');
  });

  it('refuses a deployment whose routes edgeHub could not load, naming the route', async () => {
    await expect(deployModules(hub, 'gw', ['sender'], { broken: 'FROM /messages/modules/*/outputs/up INTO $upstream' })).rejects.toThrow(
      /route broken: unsupported source/,
    );
    const edgeHub = (await hub.registry.getModuleTwin('gw', '$edgeHub')).responseBody;
    expect(Object.keys(edgeHub.properties.desired.routes as object)).toEqual(['toReceiver', 'modulesUp', 'leavesUp']);
  });

  it('refuses workload sign requests for a wrong generation id', async () => {
    const { generationId } = (await hub.registry.getModule('gw', 'sender')).responseBody;
    const badEnv = edgeModuleEnvironment(hub.hubProcess.info, 'gw', 'sender', `${generationId ?? ''}x`);
    await expect(startModuleProcess(badEnv)).rejects.toThrow(/exited|not found|generation/i);
  });
});
