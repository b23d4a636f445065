import https from 'node:https';
import iothub from 'azure-iothub';
import { DispatcherError } from './errors.ts';

const { Registry, Client } = iothub;

// The dispatcher's only doors into IoT Hub, through the unmodified service SDK: register identities (with the
// parent scope that makes a device a child of its gateway), call a module's direct method, patch a module
// twin's desired properties.

export interface MethodOutcome {
  status: number;
  payload: unknown;
}

export interface IdentityHub {
  /** Registers a device; `parentId` must be an edge gateway. Returns the identity's generation id. */
  createDevice(request: { deviceId: string; isGateway: boolean; parentId?: string }): Promise<{ generationId: string }>;
  invokeModuleMethod(deviceId: string, moduleId: string, methodName: string, payload: unknown, responseTimeoutInSeconds: number): Promise<MethodOutcome>;
  patchModuleDesired(deviceId: string, moduleId: string, desired: Record<string, unknown>): Promise<void>;
  close(): Promise<void>;
}

interface ScopedDevice {
  deviceId: string;
  generationId?: string;
  deviceScope?: string;
  capabilities?: { iotEdge?: boolean };
}

const EDGE_SCOPE = /^ms-azure-iot-edge:\/\/(.+)-[^-]+$/;

/** The gateway a device scope names (`ms-azure-iot-edge://<gatewayId>-<generation>`), if any. */
export function gatewayOfScope(scope: string | undefined): string | undefined {
  return scope ? EDGE_SCOPE.exec(scope)?.[1] : undefined;
}

export class ServiceHub implements IdentityHub {
  readonly #registry: InstanceType<typeof Registry>;
  readonly #client: InstanceType<typeof Client>;

  /** Gateway scopes by gateway id: a scope is fixed for an identity's life, and creating children is the hot path. */
  readonly #scopes = new Map<string, { scope: string; at: number }>();

  constructor(connectionString: string) {
    this.#registry = Registry.fromConnectionString(connectionString);
    this.#client = Client.fromConnectionString(connectionString);
    // Both SDK clients keep HTTPS connections alive with an agent that has no timeout, and Node applies a server's
    // `Keep-Alive: timeout=N` hint only when the agent has one: idle sockets then stay in the pool until the hub
    // closes them, and a request that picks one up just as it closes fails with "socket hang up" (seen as 503
    // HUB_UNAVAILABLE on POST /devices in the dispatch bench). With a timeout the agent drops an idle socket a
    // second before the server's hint says it would (60 s when the server gives none).
    for (const sdkClient of [this.#registry, this.#client]) {
      const rest = (sdkClient as unknown as { _restApiClient?: { setOptions?: (o: unknown) => void } })._restApiClient;
      rest?.setOptions?.({ http: { agent: new https.Agent({ keepAlive: true, maxSockets: 64, timeout: 60_000 }) } });
    }
  }

  async #parentScope(parentId: string): Promise<string> {
    const cached = this.#scopes.get(parentId);
    if (cached && Date.now() - cached.at < 60_000) return cached.scope;
    let parent: ScopedDevice;
    try {
      parent = (await this.#registry.get(parentId)).responseBody;
    } catch (error) {
      if ((error as Error).name === 'DeviceNotFoundError') throw new DispatcherError('PARENT_NOT_FOUND', `parent ${parentId} is not registered in IoT Hub`);
      throw hubUnavailable(error);
    }
    if (!parent.capabilities?.iotEdge || !parent.deviceScope) throw new DispatcherError('PARENT_NOT_GATEWAY', `${parentId} is not an IoT Edge device`);
    this.#scopes.set(parentId, { scope: parent.deviceScope, at: Date.now() });
    return parent.deviceScope;
  }

  async createDevice(request: { deviceId: string; isGateway: boolean; parentId?: string }): Promise<{ generationId: string }> {
    const body: Record<string, unknown> = { deviceId: request.deviceId, capabilities: { iotEdge: request.isGateway }, status: 'enabled' };
    if (request.parentId) {
      const scope = await this.#parentScope(request.parentId);
      // A leaf device takes its gateway's scope; a nested gateway lists it among its parent scopes.
      if (request.isGateway) body.parentScopes = [scope];
      else body.deviceScope = scope;
    }
    try {
      const created = (await this.#registry.create(body as never)).responseBody as unknown as ScopedDevice;
      return { generationId: created.generationId ?? '' };
    } catch (error) {
      if ((error as Error).name === 'DeviceAlreadyExistsError') throw new DispatcherError('DEVICE_EXISTS', `${request.deviceId} exists in IoT Hub already`);
      // A gateway deleted and created again has a new scope: forget the cached one.
      if (request.parentId) this.#scopes.delete(request.parentId);
      throw hubUnavailable(error);
    }
  }

  async invokeModuleMethod(deviceId: string, moduleId: string, methodName: string, payload: unknown, responseTimeoutInSeconds: number): Promise<MethodOutcome> {
    // connectTimeoutInSeconds 0: an offline module fails at once (404) instead of holding a dispatcher slot.
    const result = await this.#client.invokeDeviceMethod(deviceId, moduleId, { methodName, payload, responseTimeoutInSeconds, connectTimeoutInSeconds: 0 });
    const outcome = result.result as { status?: number; payload?: unknown };
    return { status: outcome.status ?? 0, payload: outcome.payload };
  }

  async patchModuleDesired(deviceId: string, moduleId: string, desired: Record<string, unknown>): Promise<void> {
    await this.#registry.updateModuleTwin(deviceId, moduleId, { properties: { desired } }, '*');
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function hubUnavailable(error: unknown): DispatcherError {
  const message = (error as Error).message;
  const tls = /self[- ]signed|unable to verify|certificate/i.test(message);
  return new DispatcherError('HUB_UNAVAILABLE', tls ? `TLS: ${message} (start the dispatcher with NODE_EXTRA_CA_CERTS=<hub.json caFile>)` : message);
}
