import { EventEmitter } from 'node:events';
import type { BuiltInEndpoint, CloudEventSource } from './builtInEndpoint.ts';
import type { DeviceSession } from './deviceSession.ts';
import { HubError, badRequest, notOnline, tooLarge } from './hubError.ts';
import type { HubMessage } from './hubMessage.ts';
import type { IdentityDocument, IdentityKey, RegistryStore, TwinState } from './registryStore.ts';
import { identityName } from './registryStore.ts';
import type { Route } from './routes.ts';
import { parseRoute, routeMatches, routesFromEdgeHubDesired } from './routes.ts';
import type { JsonObject } from './twinDocument.ts';
import { isJsonObject, mergePatch, validateTwinPatch } from './twinDocument.ts';
import { restTwin } from './twinView.ts';

// The hub core: IoT Hub's registry-facing operations plus, for every edge device, the edgeHub that its modules
// and children connect through (routes, module inputs, store-and-forward to $upstream). Transports (MQTT,
// REST, workload API) are thin adapters over this class.

export const methodLimits = { payloadBytes: 128 * 1024, minResponseTimeout: 5, maxResponseTimeout: 300, maxConnectTimeout: 300 };

// edgeHub's default route when a deployment sets none.
const defaultEdgeRoutes: Route[] = [parseRoute('default', 'FROM /messages/* INTO $upstream')];

export interface MethodRequest {
  methodName: string;
  payload: unknown;
  responseTimeoutInSeconds: number;
  connectTimeoutInSeconds: number;
}

export interface MethodResult {
  status: number;
  payload: unknown;
}

interface PendingMethod {
  resolve: (result: MethodResult) => void;
  reject: (error: HubError) => void;
  timer: NodeJS.Timeout;
  session: DeviceSession;
}

interface QueuedMessage {
  message: HubMessage;
  /** True when the message comes up from a child gateway: only `/messages/*` sources match it there. */
  fromChildGateway: boolean;
}

export interface IotHubOptions {
  hostName: string;
  hubName: string;
  store: RegistryStore;
  events: BuiltInEndpoint;
  log?: (line: string) => void;
}

export class IotHub extends EventEmitter<{ sessionsChanged: [] }> {
  readonly hostName: string;
  readonly hubName: string;
  readonly store: RegistryStore;
  readonly events: BuiltInEndpoint;
  readonly #log: (line: string) => void;
  readonly #sessions = new Map<string, DeviceSession>();
  readonly #pendingMethods = new Map<string, PendingMethod>();
  #nextRequestId = 1;
  readonly #routes = new Map<string, Route[]>();
  readonly #inputQueues = new Map<string, { moduleId: string; deviceId: string; items: Array<{ inputName: string; message: HubMessage }>; pumping: boolean }>();
  readonly #upstreamQueues = new Map<string, QueuedMessage[]>();
  readonly #heldDesired = new Map<string, JsonObject[]>();
  readonly #heldReported = new Map<string, JsonObject[]>();
  readonly #cutUpstream = new Set<string>();
  #connectionSequence = 0;

  constructor(options: IotHubOptions) {
    super();
    this.hostName = options.hostName;
    this.hubName = options.hubName;
    this.store = options.store;
    this.events = options.events;
    this.#log = options.log ?? (() => undefined);
  }

  // ---- registry ---------------------------------------------------------------------------------------

  createIdentity(key: IdentityKey, body: unknown): IdentityDocument {
    const doc = this.store.create(key, body);
    if (!key.moduleId && doc.capabilities?.iotEdge) {
      // IoT Hub creates the two system modules with every edge device.
      for (const moduleId of ['$edgeAgent', '$edgeHub']) this.store.create({ deviceId: key.deviceId, moduleId }, { managedBy: 'IotEdge' });
    }
    this.#lifecycleEvent(key, key.moduleId ? 'createModuleIdentity' : 'createDeviceIdentity', doc);
    return doc;
  }

  deleteIdentity(key: IdentityKey, ifMatch: string | undefined): void {
    const twin = this.store.getTwin(key);
    const doc = this.store.delete(key, ifMatch);
    const affected = [...this.#sessions.values()].filter(
      (s) => s.identity.deviceId === key.deviceId && (!key.moduleId || s.identity.moduleId === key.moduleId),
    );
    for (const session of affected) session.close('identity deleted');
    this.#routes.delete(key.deviceId);
    this.#lifecycleEvent(key, key.moduleId ? 'deleteModuleIdentity' : 'deleteDeviceIdentity', doc, twin);
  }

  #lifecycleEvent(key: IdentityKey, opType: string, doc: IdentityDocument, twin?: TwinState): void {
    const body = restTwin(doc, twin ?? this.store.getTwin(key));
    this.#appendCloudEvent('deviceLifecycleEvents', key, Buffer.from(JSON.stringify(body)), {
      hubName: this.hubName,
      deviceId: key.deviceId,
      ...(key.moduleId ? { moduleId: key.moduleId } : {}),
      opType,
      operationTimestamp: new Date().toISOString(),
      'iothub-message-schema': 'deviceLifecycleNotification',
    });
  }

  #appendCloudEvent(source: CloudEventSource, key: IdentityKey, body: Buffer, properties: Record<string, string>,
    systemProperties: Record<string, string> = { 'content-type': 'application/json', 'content-encoding': 'utf-8' }): void {
    this.events.append({ source, deviceId: key.deviceId, moduleId: key.moduleId, body, properties, systemProperties });
  }

  // ---- twins ------------------------------------------------------------------------------------------

  /** Service-side twin update; pushes the desired patch to the client (or holds it while its gateway is cut off). */
  updateTwin(key: IdentityKey, body: unknown, ifMatch: string | undefined, mode: 'merge' | 'replace'): JsonObject {
    const { twin, desiredPatch } = this.store.updateTwin(key, body, ifMatch, mode);
    if (desiredPatch) this.#desiredChanged(key, desiredPatch);
    return restTwin(this.store.requireIdentity(key), twin);
  }

  #desiredChanged(key: IdentityKey, patch: JsonObject): void {
    if (key.moduleId === '$edgeHub') this.#routes.delete(key.deviceId);
    const session = this.#sessions.get(identityName(key));
    if (!session?.subscribedToDesired) return;
    if (this.isCloudReachable(key)) {
      session.sendDesiredPatch(patch);
    } else {
      const held = this.#heldDesired.get(identityName(key)) ?? [];
      held.push(patch);
      this.#heldDesired.set(identityName(key), held);
    }
  }

  /** Device-side twin GET: the hub's twin, or edgeHub's cached view (with unsynced reported patches) when cut off. */
  deviceTwin(key: IdentityKey): TwinState {
    const twin = this.store.getTwin(key);
    const held = this.#heldReported.get(identityName(key)) ?? [];
    return held.reduce(
      (view, patch) => ({ ...view, reported: mergePatch(view.reported, patch), reportedVersion: view.reportedVersion + 1 }),
      twin,
    );
  }

  /** Device-side reported patch; returns the new reported version. Held by edgeHub while the gateway is cut off. */
  patchReported(key: IdentityKey, patch: unknown): number {
    if (this.isCloudReachable(key)) return this.store.patchReported(key, patch);
    const validated = validateTwinPatch('reported', patch);
    const held = this.#heldReported.get(identityName(key)) ?? [];
    held.push(validated);
    this.#heldReported.set(identityName(key), held);
    return this.deviceTwin(key).reportedVersion;
  }

  /** Applies an IoT Edge deployment's modulesContent to an edge device, as IoT Hub + edgeAgent would. */
  applyConfigurationContent(deviceId: string, content: unknown): void {
    const device = this.store.requireIdentity({ deviceId });
    if (!device.capabilities?.iotEdge) throw badRequest(`Device ${deviceId} is not an IoT Edge device`);
    if (!isJsonObject(content) || !isJsonObject(content.modulesContent)) throw badRequest('modulesContent is required');
    const modulesContent = content.modulesContent;
    const desiredOf = (moduleId: string): JsonObject | undefined => {
      const entry = modulesContent[moduleId];
      if (entry === undefined) return undefined;
      if (!isJsonObject(entry) || !isJsonObject(entry['properties.desired'])) {
        throw badRequest(`modulesContent.${moduleId} must have a properties.desired object`);
      }
      return entry['properties.desired'];
    };
    const edgeHubDesired = desiredOf('$edgeHub');
    if (edgeHubDesired) {
      try {
        routesFromEdgeHubDesired(edgeHubDesired);
      } catch (error) {
        throw badRequest((error as Error).message);
      }
    }
    // edgeAgent creates an identity for every module of the deployment; the emulator does it on its behalf.
    const agentModules = desiredOf('$edgeAgent')?.modules;
    const moduleIds = new Set([...Object.keys(modulesContent), ...(isJsonObject(agentModules) ? Object.keys(agentModules) : [])]);
    for (const moduleId of moduleIds) {
      if (!this.store.getIdentity({ deviceId, moduleId })) this.createIdentity({ deviceId, moduleId }, { managedBy: 'IotEdge' });
      const desired = desiredOf(moduleId);
      if (desired) this.#desiredChanged({ deviceId, moduleId }, this.store.replaceDesired({ deviceId, moduleId }, desired));
    }
  }

  // ---- sessions ---------------------------------------------------------------------------------------

  attachSession(session: DeviceSession): void {
    const name = identityName(session.identity);
    const previous = this.#sessions.get(name);
    // IoT Hub allows one connection per identity: a new one takes over.
    if (previous && previous !== session) previous.close('another connection with the same identity was opened');
    this.#sessions.set(name, session);
    this.store.setConnectionState(session.identity, true);
    if (this.isCloudReachable(session.identity)) this.#connectionEvent(session.identity, true);
    this.#log(`connected ${name}`);
    this.emit('sessionsChanged');
    this.#pumpInputs(session.identity);
  }

  detachSession(session: DeviceSession): void {
    const name = identityName(session.identity);
    if (this.#sessions.get(name) !== session) return;
    this.#sessions.delete(name);
    this.store.setConnectionState(session.identity, false);
    if (this.isCloudReachable(session.identity)) this.#connectionEvent(session.identity, false);
    for (const [requestId, pending] of this.#pendingMethods) {
      if (pending.session !== session) continue;
      clearTimeout(pending.timer);
      this.#pendingMethods.delete(requestId);
      pending.reject(new HubError(404, 'DeviceNotOnline', `${name} disconnected before answering the method call`));
    }
    this.#log(`disconnected ${name}`);
    this.emit('sessionsChanged');
  }

  /** Called by a session when it subscribes to something new, so held work can flow. */
  sessionSubscribed(session: DeviceSession): void {
    this.emit('sessionsChanged');
    this.#pumpInputs(session.identity);
  }

  isConnected(key: IdentityKey): boolean {
    return this.#sessions.has(identityName(key));
  }

  #connectionEvent(key: IdentityKey, connected: boolean): void {
    this.#connectionSequence += 1;
    const sequenceNumber = `${Date.now().toString(16).padStart(16, '0')}${this.#connectionSequence.toString(16).padStart(16, '0')}`;
    this.#appendCloudEvent('deviceConnectionStateEvents', key, Buffer.from(JSON.stringify({ sequenceNumber })), {
      hubName: this.hubName,
      deviceId: key.deviceId,
      ...(key.moduleId ? { moduleId: key.moduleId } : {}),
      opType: connected ? 'deviceConnected' : 'deviceDisconnected',
      operationTimestamp: new Date().toISOString(),
      'iothub-message-schema': 'deviceConnectionStateNotification',
    });
  }

  // ---- direct methods ---------------------------------------------------------------------------------

  /**
   * Invokes a direct method. `caller` is set when a module calls through its edgeHub; a call between modules of
   * the same edge device stays local and works while the device is cut off from the cloud.
   */
  async invokeMethod(target: IdentityKey, body: unknown, caller?: IdentityKey): Promise<MethodResult> {
    const request = parseMethodRequest(body);
    this.store.requireIdentity(target);
    const local = caller !== undefined && caller.deviceId === target.deviceId;
    const reachable = local || (this.isCloudReachable(target) && (caller === undefined || this.isCloudReachable(caller)));
    const session = reachable ? await this.#waitForMethodSession(target, request.connectTimeoutInSeconds) : undefined;
    if (!session) throw notOnline(identityName(target));
    const requestId = (this.#nextRequestId++).toString(16);
    return new Promise<MethodResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pendingMethods.delete(requestId);
        reject(new HubError(504, 'GatewayTimeout', `Timed out waiting for the response from ${identityName(target)} (${request.responseTimeoutInSeconds}s)`));
      }, request.responseTimeoutInSeconds * 1000);
      this.#pendingMethods.set(requestId, { resolve, reject, timer, session });
      session.sendMethodRequest(requestId, request.methodName, Buffer.from(JSON.stringify(request.payload ?? null)));
    });
  }

  async #waitForMethodSession(target: IdentityKey, connectTimeoutSeconds: number): Promise<DeviceSession | undefined> {
    const ready = (): DeviceSession | undefined => {
      const session = this.#sessions.get(identityName(target));
      return session?.subscribedToMethods && this.#sessionReachable(session) ? session : undefined;
    };
    const now = ready();
    if (now || connectTimeoutSeconds === 0) return now;
    return new Promise((resolve) => {
      const onChange = (): void => {
        const session = ready();
        if (session) finish(session);
      };
      const finish = (session: DeviceSession | undefined): void => {
        clearTimeout(timer);
        this.off('sessionsChanged', onChange);
        resolve(session);
      };
      const timer = setTimeout(() => finish(undefined), connectTimeoutSeconds * 1000);
      this.on('sessionsChanged', onChange);
    });
  }

  #sessionReachable(session: DeviceSession): boolean {
    return this.#sessions.get(identityName(session.identity)) === session;
  }

  /** A device's answer to a method request. */
  completeMethod(session: DeviceSession, requestId: string, status: number, payload: Buffer): void {
    const pending = this.#pendingMethods.get(requestId);
    if (pending?.session !== session) return;
    this.#pendingMethods.delete(requestId);
    clearTimeout(pending.timer);
    if (payload.length > methodLimits.payloadBytes) {
      pending.reject(new HubError(400, 'ArgumentInvalid', `Method response payload exceeds ${methodLimits.payloadBytes} bytes`));
      return;
    }
    let parsed: unknown = null;
    if (payload.length > 0) {
      try {
        parsed = JSON.parse(payload.toString('utf8'));
      } catch {
        pending.reject(new HubError(400, 'ArgumentInvalid', 'Method response payload is not valid JSON'));
        return;
      }
    }
    pending.resolve({ status, payload: parsed });
  }

  // ---- messages ---------------------------------------------------------------------------------------

  /** Telemetry or a module output from a connected client. */
  receiveMessage(message: HubMessage): void {
    const from: IdentityKey = { deviceId: message.connectionDeviceId, moduleId: message.connectionModuleId };
    const gateway = from.moduleId ? from.deviceId : this.store.parentOf(from.deviceId);
    if (gateway) {
      this.#route(gateway, { message, fromChildGateway: false });
    } else if (this.#cutUpstream.has(from.deviceId)) {
      this.#enqueueUpstream(from.deviceId, { message, fromChildGateway: false });
    } else {
      this.#toCloud(message);
    }
  }

  #routesOf(deviceId: string): Route[] {
    let routes = this.#routes.get(deviceId);
    if (!routes) {
      const edgeHub = this.store.getIdentity({ deviceId, moduleId: '$edgeHub' });
      const desired = edgeHub ? this.store.getTwin({ deviceId, moduleId: '$edgeHub' }).desired : {};
      try {
        routes = routesFromEdgeHubDesired(desired);
      } catch (error) {
        this.#log(`edgeHub of ${deviceId}: ${(error as Error).message}; using the default route`);
        routes = [];
      }
      if (routes.length === 0) routes = defaultEdgeRoutes;
      this.#routes.set(deviceId, routes);
    }
    return routes;
  }

  #route(gatewayId: string, queued: QueuedMessage): void {
    let toUpstream = false;
    const inputs = new Set<string>();
    for (const route of this.#routesOf(gatewayId)) {
      if (queued.fromChildGateway && route.source.kind !== 'all') continue;
      if (!routeMatches(route, queued.message)) continue;
      if (route.sink.kind === 'upstream') toUpstream = true;
      else inputs.add(`${route.sink.moduleId}\u0000${route.sink.inputName}`);
    }
    for (const entry of inputs) {
      const [moduleId = '', inputName = ''] = entry.split('\u0000');
      this.#enqueueInput({ deviceId: gatewayId, moduleId }, inputName, queued.message);
    }
    if (toUpstream) this.#enqueueUpstream(gatewayId, queued);
  }

  #enqueueUpstream(gatewayId: string, queued: QueuedMessage): void {
    const queue = this.#upstreamQueues.get(gatewayId) ?? [];
    queue.push(queued);
    this.#upstreamQueues.set(gatewayId, queue);
    this.#pumpUpstream(gatewayId);
  }

  #pumpUpstream(gatewayId: string): void {
    if (this.#cutUpstream.has(gatewayId)) return;
    const queue = this.#upstreamQueues.get(gatewayId);
    if (!queue) return;
    this.#upstreamQueues.delete(gatewayId);
    const parent = this.store.parentOf(gatewayId);
    for (const { message } of queue) {
      if (parent) this.#route(parent, { message, fromChildGateway: true });
      else this.#toCloud(message);
    }
  }

  #toCloud(message: HubMessage): void {
    const systemProperties: Record<string, string> = { 'iothub-connection-auth-method': '{"scope":"device","type":"sas"}' };
    if (message.messageId) systemProperties['message-id'] = message.messageId;
    if (message.correlationId) systemProperties['correlation-id'] = message.correlationId;
    if (message.contentType) systemProperties['content-type'] = message.contentType;
    if (message.contentEncoding) systemProperties['content-encoding'] = message.contentEncoding;
    if (message.userId) systemProperties['user-id'] = message.userId;
    this.events.append({
      source: 'Telemetry',
      deviceId: message.connectionDeviceId,
      moduleId: message.connectionModuleId,
      body: message.body,
      properties: message.properties,
      systemProperties,
    });
  }

  #enqueueInput(target: IdentityKey & { moduleId: string }, inputName: string, message: HubMessage): void {
    const name = identityName(target);
    const queue = this.#inputQueues.get(name) ?? { deviceId: target.deviceId, moduleId: target.moduleId, items: [], pumping: false };
    queue.items.push({ inputName, message });
    this.#inputQueues.set(name, queue);
    this.#pumpInputs(target);
  }

  /** Delivers a module's queued inputs in order, one acknowledged message at a time, as edgeHub does. */
  #pumpInputs(target: IdentityKey): void {
    const name = identityName(target);
    const queue = this.#inputQueues.get(name);
    if (!queue || queue.pumping) return;
    const next = (): void => {
      const session = this.#sessions.get(name);
      const item = queue.items[0];
      if (!item || !session?.subscribedToInputs) {
        queue.pumping = false;
        return;
      }
      queue.pumping = true;
      session.deliverInput(item.inputName, item.message).then(
        () => {
          queue.items.shift();
          next();
        },
        () => {
          // The client went away before acknowledging: keep the message for its next connection.
          queue.pumping = false;
        },
      );
    };
    next();
  }

  // ---- reachability and faults ------------------------------------------------------------------------

  /** The edge devices a client's cloud traffic passes through: its own edgeHub (if any) and every parent above. */
  #gatewayChain(key: IdentityKey): string[] {
    const chain: string[] = [];
    let current: string | undefined = key.moduleId ? key.deviceId : this.store.getIdentity({ deviceId: key.deviceId })?.capabilities?.iotEdge
      ? key.deviceId
      : this.store.parentOf(key.deviceId);
    while (current && !chain.includes(current)) {
      chain.push(current);
      current = this.store.parentOf(current);
    }
    return chain;
  }

  isCloudReachable(key: IdentityKey): boolean {
    return this.#gatewayChain(key).every((gateway) => !this.#cutUpstream.has(gateway));
  }

  /** Fault injection: closes a client's connection as if the network dropped it. */
  dropConnection(key: IdentityKey): boolean {
    const session = this.#sessions.get(identityName(key));
    session?.close('connection dropped by fault injection');
    return session !== undefined;
  }

  /** Fault injection: cuts or restores an edge device's link to its parent (or the cloud). */
  setUpstreamConnected(deviceId: string, connected: boolean): void {
    const device = this.store.requireIdentity({ deviceId });
    if (!device.capabilities?.iotEdge) throw badRequest(`${deviceId} is not an IoT Edge device`);
    const affected = [...this.#sessions.values()].filter((s) => this.#gatewayChain(s.identity).includes(deviceId));
    const before = new Map(affected.map((s) => [s, this.isCloudReachable(s.identity)]));
    if (connected) this.#cutUpstream.delete(deviceId);
    else this.#cutUpstream.add(deviceId);
    for (const session of affected) {
      const now = this.isCloudReachable(session.identity);
      if (before.get(session) !== now) this.#connectionEvent(session.identity, now);
    }
    if (!connected) return;
    // Coming back: edgeHub syncs reported properties, delivers held desired patches, then forwards held messages.
    for (const [name, patches] of [...this.#heldReported]) {
      const key = keyFromName(name);
      if (!this.isCloudReachable(key)) continue;
      this.#heldReported.delete(name);
      for (const patch of patches) this.store.patchReported(key, patch);
    }
    for (const [name, patches] of [...this.#heldDesired]) {
      const session = this.#sessions.get(name);
      if (!session || !this.isCloudReachable(session.identity)) continue;
      this.#heldDesired.delete(name);
      for (const patch of patches) session.sendDesiredPatch(patch);
    }
    for (const gatewayId of [...this.#upstreamQueues.keys()]) this.#pumpUpstream(gatewayId);
    this.emit('sessionsChanged');
  }

  /** Ends every session and pending call (emulator shutdown). */
  closeAll(): void {
    for (const session of [...this.#sessions.values()]) session.close('emulator stopping');
    for (const pending of this.#pendingMethods.values()) {
      clearTimeout(pending.timer);
      pending.reject(new HubError(503, 'ServerError', 'emulator stopping'));
    }
    this.#pendingMethods.clear();
  }
}

function keyFromName(name: string): IdentityKey {
  const slash = name.indexOf('/');
  return slash < 0 ? { deviceId: name } : { deviceId: name.slice(0, slash), moduleId: name.slice(slash + 1) };
}

function parseMethodRequest(body: unknown): MethodRequest {
  if (!isJsonObject(body)) throw badRequest('The method request body must be a JSON object');
  const { methodName, payload } = body;
  if (typeof methodName !== 'string' || methodName.length === 0) throw badRequest('methodName is required');
  const seconds = (value: unknown, name: string, fallback: number, min: number, max: number): number => {
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      throw badRequest(`${name} must be an integer from ${min} to ${max}`);
    }
    return value;
  };
  const request: MethodRequest = {
    methodName,
    payload: payload ?? null,
    responseTimeoutInSeconds: seconds(body.responseTimeoutInSeconds, 'responseTimeoutInSeconds', 30, methodLimits.minResponseTimeout, methodLimits.maxResponseTimeout),
    connectTimeoutInSeconds: seconds(body.connectTimeoutInSeconds, 'connectTimeoutInSeconds', 0, 0, methodLimits.maxConnectTimeout),
  };
  if (Buffer.byteLength(JSON.stringify(request.payload)) > methodLimits.payloadBytes) {
    throw tooLarge('Method payload', methodLimits.payloadBytes);
  }
  return request;
}
