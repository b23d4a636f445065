import mqttPacket from 'mqtt-packet';
import type { IConnectPacket, IPublishPacket, ISubscribePacket, Packet } from 'mqtt-packet';
import type { Socket } from 'node:net';
import type { DeviceSession } from './deviceSession.ts';
import { HubError } from './hubError.ts';
import type { HubMessage } from './hubMessage.ts';
import { maxTelemetryBytes, messageSize } from './hubMessage.ts';
import type { IotHub } from './iotHub.ts';
import type { IdentityKey } from './registryStore.ts';
import { identityName } from './registryStore.ts';
import { parseSasToken, verifySasToken } from './sharedAccessSignature.ts';
import type { JsonObject } from './twinDocument.ts';
import { deviceTwin } from './twinView.ts';

// One device or module connection speaking IoT Hub's MQTT 3.1.1 dialect: SAS-token CONNECT, the fixed
// `devices/...` and `$iothub/...` topics, QoS 0/1. Like IoT Hub, a client that publishes where its identity
// may not is disconnected, and a subscription it may not make is refused in the SUBACK.

const connectTimeoutMs = 10_000;
const systemPropertyKeys: Record<string, keyof HubMessage> = {
  '$.mid': 'messageId',
  '$.cid': 'correlationId',
  '$.ct': 'contentType',
  '$.ce': 'contentEncoding',
  '$.uid': 'userId',
};

export class MqttSession implements DeviceSession {
  readonly #socket: Socket;
  readonly #hub: IotHub;
  readonly #log: (line: string) => void;
  #identity: IdentityKey | undefined;
  #subscriptions = new Set<'methods' | 'desired' | 'inputs' | 'twinResponses' | 'c2d'>();
  #keepAliveTimer: NodeJS.Timeout | undefined;
  #keepAliveMs = 0;
  #nextPacketId = 1;
  readonly #awaitingAck = new Map<number, { resolve: () => void; reject: (error: Error) => void }>();
  #closed = false;

  constructor(socket: Socket, hub: IotHub, log: (line: string) => void) {
    this.#socket = socket;
    this.#hub = hub;
    this.#log = log;
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (packet: Packet) => this.#onPacket(packet));
    parser.on('error', (error: Error) => this.close(`malformed MQTT packet: ${error.message}`));
    socket.on('data', (chunk: Buffer) => {
      this.#touch();
      parser.parse(chunk);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => this.#onClosed());
    this.#keepAliveMs = connectTimeoutMs;
    this.#touch();
  }

  get identity(): IdentityKey {
    if (!this.#identity) throw new Error('session has no identity before CONNECT');
    return this.#identity;
  }

  get subscribedToMethods(): boolean {
    return this.#subscriptions.has('methods');
  }

  get subscribedToDesired(): boolean {
    return this.#subscriptions.has('desired');
  }

  get subscribedToInputs(): boolean {
    return this.#subscriptions.has('inputs');
  }

  close(reason: string): void {
    if (this.#closed) return;
    this.#log(`closing ${this.#identity ? identityName(this.#identity) : 'unauthenticated connection'}: ${reason}`);
    this.#socket.destroy();
    this.#onClosed();
  }

  #onClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#keepAliveTimer);
    for (const waiter of this.#awaitingAck.values()) waiter.reject(new Error('connection closed'));
    this.#awaitingAck.clear();
    if (this.#identity) this.#hub.detachSession(this);
  }

  #touch(): void {
    clearTimeout(this.#keepAliveTimer);
    // MQTT: the server may drop a client silent for 1.5x its keep-alive.
    if (this.#keepAliveMs > 0) this.#keepAliveTimer = setTimeout(() => this.close('keep-alive expired'), this.#keepAliveMs);
  }

  #send(packet: Packet): void {
    if (!this.#closed) this.#socket.write(mqttPacket.generate(packet));
  }

  #onPacket(packet: Packet): void {
    if (this.#closed) return;
    if (!this.#identity && packet.cmd !== 'connect') {
      this.close('first packet was not CONNECT');
      return;
    }
    try {
      switch (packet.cmd) {
        case 'connect':
          this.#onConnect(packet);
          return;
        case 'publish':
          this.#onPublish(packet);
          return;
        case 'puback': {
          const waiter = this.#awaitingAck.get(packet.messageId ?? -1);
          this.#awaitingAck.delete(packet.messageId ?? -1);
          waiter?.resolve();
          return;
        }
        case 'subscribe':
          this.#onSubscribe(packet);
          return;
        case 'unsubscribe':
          for (const topic of packet.unsubscriptions) {
            const kind = this.#subscriptionKind(topic);
            if (kind) this.#subscriptions.delete(kind);
          }
          this.#send({ cmd: 'unsuback', messageId: packet.messageId, granted: [] });
          return;
        case 'pingreq':
          this.#send({ cmd: 'pingresp' });
          return;
        case 'disconnect':
          this.close('client disconnected');
          return;
        default:
          this.close(`unsupported packet ${packet.cmd}`);
      }
    } catch (error) {
      this.close(`error handling ${packet.cmd}: ${(error as Error).message}`);
    }
  }

  #onConnect(packet: IConnectPacket): void {
    if (this.#identity) {
      this.close('second CONNECT');
      return;
    }
    const refuse = (returnCode: 1 | 2 | 4 | 5, reason: string): void => {
      this.#log(`refused connection of ${packet.clientId}: ${reason}`);
      this.#send({ cmd: 'connack', returnCode, sessionPresent: false });
      this.#socket.end();
      this.#closed = true;
      clearTimeout(this.#keepAliveTimer);
    };
    if (packet.protocolVersion !== 4) return refuse(1, 'IoT Hub speaks MQTT 3.1.1 only');
    const [deviceId, moduleId, extra] = packet.clientId.split('/');
    if (!deviceId || extra !== undefined || moduleId === '') return refuse(2, `client id ${packet.clientId} is not <deviceId> or <deviceId>/<moduleId>`);
    const identity: IdentityKey = { deviceId, moduleId };
    const expectedUser = `${this.#hub.hostName}/${packet.clientId}/`;
    if (!packet.username?.toLowerCase().startsWith(expectedUser.toLowerCase())) {
      return refuse(4, `user name must start with ${expectedUser}`);
    }
    const doc = this.#hub.store.getIdentity(identity);
    if (!doc) return refuse(5, `unknown identity ${packet.clientId}`);
    if (doc.status !== 'enabled') return refuse(5, `identity ${packet.clientId} is disabled`);
    try {
      const token = parseSasToken(packet.password?.toString('utf8') ?? '');
      const resource = moduleId
        ? `${this.#hub.hostName}/devices/${deviceId}/modules/${moduleId}`
        : `${this.#hub.hostName}/devices/${deviceId}`;
      const keys = doc.authentication.symmetricKey;
      verifySasToken(token, [keys.primaryKey, keys.secondaryKey], resource);
    } catch (error) {
      return refuse(5, (error as Error).message);
    }
    this.#identity = identity;
    this.#keepAliveMs = (packet.keepalive ?? 0) > 0 ? (packet.keepalive ?? 0) * 1500 : 0;
    this.#touch();
    this.#send({ cmd: 'connack', returnCode: 0, sessionPresent: false });
    this.#hub.attachSession(this);
  }

  #subscriptionKind(topic: string): 'methods' | 'desired' | 'inputs' | 'twinResponses' | 'c2d' | undefined {
    const { deviceId, moduleId } = this.identity;
    if (topic === '$iothub/methods/POST/#') return 'methods';
    if (topic === '$iothub/twin/PATCH/properties/desired/#') return 'desired';
    if (topic === '$iothub/twin/res/#') return 'twinResponses';
    if (moduleId && topic === `devices/${deviceId}/modules/${moduleId}/inputs/#`) return 'inputs';
    if (!moduleId && topic === `devices/${deviceId}/messages/devicebound/#`) return 'c2d';
    return undefined;
  }

  #onSubscribe(packet: ISubscribePacket): void {
    const granted = packet.subscriptions.map(({ topic, qos }) => {
      const kind = this.#subscriptionKind(topic);
      if (!kind) {
        this.#log(`refused subscription of ${identityName(this.identity)} to ${topic}`);
        return 128;
      }
      this.#subscriptions.add(kind);
      return Math.min(qos, 1);
    });
    this.#send({ cmd: 'suback', messageId: packet.messageId, granted });
    this.#hub.sessionSubscribed(this);
  }

  #onPublish(packet: IPublishPacket): void {
    const { deviceId, moduleId } = this.identity;
    const topic = packet.topic;
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    const telemetryPrefix = moduleId ? `devices/${deviceId}/modules/${moduleId}/messages/events/` : `devices/${deviceId}/messages/events/`;
    if (topic.startsWith(telemetryPrefix) || `${topic}/` === telemetryPrefix) {
      const message = this.#telemetry(topic.slice(telemetryPrefix.length), payload);
      if (messageSize(message) > maxTelemetryBytes) {
        this.close(`message of ${messageSize(message)} bytes exceeds IoT Hub's ${maxTelemetryBytes}-byte limit`);
        return;
      }
      this.#hub.receiveMessage(message);
      if (packet.qos === 1) this.#send({ cmd: 'puback', messageId: packet.messageId ?? 0 });
      return;
    }
    if (topic.startsWith('$iothub/twin/')) {
      this.#onTwinRequest(topic, payload);
      return;
    }
    const methodResponse = /^\$iothub\/methods\/res\/(\d{3})\/\?(.*)$/.exec(topic);
    if (methodResponse) {
      const requestId = new URLSearchParams(methodResponse[2]).get('$rid');
      if (requestId) this.#hub.completeMethod(this, requestId, Number(methodResponse[1]), payload);
      return;
    }
    this.close(`publish to ${topic} is not allowed for ${identityName(this.identity)}`);
  }

  #telemetry(propertyBag: string, body: Buffer): HubMessage {
    const properties: Record<string, string> = {};
    const system: Partial<Record<keyof HubMessage, string>> = {};
    let outputName: string | undefined;
    for (const [key, value] of new URLSearchParams(propertyBag.replace(/\/$/, ''))) {
      if (key === '$.on') outputName = value;
      else if (systemPropertyKeys[key]) system[systemPropertyKeys[key]] = value;
      else if (!key.startsWith('$.')) properties[key] = value;
    }
    return {
      body,
      properties,
      messageId: system.messageId,
      correlationId: system.correlationId,
      contentType: system.contentType,
      contentEncoding: system.contentEncoding,
      userId: system.userId,
      connectionDeviceId: this.identity.deviceId,
      connectionModuleId: this.identity.moduleId,
      outputName,
      enqueuedTime: new Date().toISOString(),
    };
  }

  #onTwinRequest(topic: string, payload: Buffer): void {
    const match = /^\$iothub\/twin\/(GET|PATCH\/properties\/reported)\/\?(.*)$/i.exec(topic);
    const requestId = match ? new URLSearchParams(match[2]).get('$rid') : null;
    if (!match?.[1] || !requestId) {
      this.close(`publish to ${topic} is not a twin request`);
      return;
    }
    const respond = (status: number, body: string, extra = ''): void =>
      this.#send({ cmd: 'publish', topic: `$iothub/twin/res/${status}/?$rid=${requestId}${extra}`, payload: Buffer.from(body), qos: 0, retain: false, dup: false });
    try {
      if (match[1].toUpperCase() === 'GET') {
        respond(200, JSON.stringify(deviceTwin(this.#hub.deviceTwin(this.identity))));
      } else {
        let patch: unknown;
        try {
          patch = JSON.parse(payload.toString('utf8'));
        } catch {
          throw new HubError(400, 'ArgumentInvalid', 'Reported properties patch is not valid JSON');
        }
        const version = this.#hub.patchReported(this.identity, patch);
        respond(204, '', `&$version=${version}`);
      }
    } catch (error) {
      if (!(error instanceof HubError)) throw error;
      respond(error.status, error.toMqttBody());
    }
  }

  sendMethodRequest(requestId: string, methodName: string, payload: Buffer): void {
    this.#send({ cmd: 'publish', topic: `$iothub/methods/POST/${methodName}/?$rid=${requestId}`, payload, qos: 0, retain: false, dup: false });
  }

  sendDesiredPatch(patch: JsonObject): void {
    const version = typeof patch.$version === 'number' ? patch.$version : 0;
    this.#send({
      cmd: 'publish',
      topic: `$iothub/twin/PATCH/properties/desired/?$version=${version}`,
      payload: Buffer.from(JSON.stringify(patch)),
      qos: 0,
      retain: false,
      dup: false,
    });
  }

  deliverInput(inputName: string, message: HubMessage): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('connection closed'));
    const { deviceId, moduleId } = this.identity;
    // The SDK splits the topic on '/' and decodes with decodeURIComponent, so encode that way (not as a form).
    const bag: Array<[string, string]> = Object.entries(message.properties);
    if (message.messageId) bag.push(['$.mid', message.messageId]);
    if (message.correlationId) bag.push(['$.cid', message.correlationId]);
    if (message.contentType) bag.push(['$.ct', message.contentType]);
    if (message.contentEncoding) bag.push(['$.ce', message.contentEncoding]);
    bag.push(['$.cdid', message.connectionDeviceId]);
    if (message.connectionModuleId) bag.push(['$.cmid', message.connectionModuleId]);
    const encodedBag = bag.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&');
    const packetId = this.#nextPacketId;
    this.#nextPacketId = (this.#nextPacketId % 65535) + 1;
    return new Promise<void>((resolve, reject) => {
      this.#awaitingAck.set(packetId, { resolve, reject });
      this.#send({
        cmd: 'publish',
        topic: `devices/${deviceId}/modules/${moduleId ?? ''}/inputs/${inputName}/${encodedBag}`,
        payload: message.body,
        qos: 1,
        messageId: packetId,
        retain: false,
        dup: false,
      });
    });
  }
}
