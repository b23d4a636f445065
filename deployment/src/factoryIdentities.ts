import { readFileSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import iothub from 'azure-iothub';
import { FactoryError } from './factoryTopology.ts';

const { Registry } = iothub;

// Identities in IoT Hub through the unmodified service SDK: gateways are IoT Edge devices, a child gateway lists
// its parent's deviceScope in parentScopes, an MCU is a leaf device whose deviceScope is its gateway's. Every
// identity is read first; a missing one is created, a wrong one is corrected, and a right one is not written at
// all, so a second run leaves every etag as it was.

/** Where the factory finds IoT Hub: the emulator's hub.json or a service connection string. */
export interface HubTarget {
  hostName: string;
  serviceConnectionString: string;
  /** The CA the hub's server certificate chains to (the emulator's); unset for Azure. */
  caFile?: string;
}

function parseConnectionString(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const part of text.trim().split(';')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    fields[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return fields;
}

/** `--hub`: a service connection string (`HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`) or a hub.json file. */
export function resolveHub(spec: string): HubTarget {
  if (/^\s*HostName=/i.test(spec)) {
    const fields = parseConnectionString(spec);
    if (!fields.HostName || !fields.SharedAccessKeyName || !fields.SharedAccessKey) {
      throw new FactoryError('HUB_INVALID', '--hub: a service connection string needs HostName, SharedAccessKeyName and SharedAccessKey');
    }
    if (fields.DeviceId) throw new FactoryError('HUB_INVALID', '--hub: that is a device connection string; the factory needs a service policy with registry write (e.g. iothubowner)');
    return { hostName: fields.HostName, serviceConnectionString: spec.trim() };
  }
  const file = path.resolve(spec);
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new FactoryError('HUB_INVALID', `--hub: ${file} is neither a readable hub.json nor a connection string (${(error as Error).message})`);
  }
  if (typeof info.serviceConnectionString !== 'string') throw new FactoryError('HUB_INVALID', `--hub: ${file} has no serviceConnectionString`);
  const fields = parseConnectionString(info.serviceConnectionString);
  const hostName = typeof info.hostName === 'string' ? info.hostName : fields.HostName;
  if (!hostName) throw new FactoryError('HUB_INVALID', `--hub: ${file} names no hostName`);
  const target: HubTarget = { hostName, serviceConnectionString: info.serviceConnectionString };
  if (typeof info.caFile === 'string') target.caFile = path.resolve(path.dirname(file), info.caFile);
  return target;
}

export interface IdentityDoc {
  deviceId: string;
  generationId?: string;
  etag?: string;
  status?: string;
  capabilities?: { iotEdge?: boolean };
  deviceScope?: string;
  parentScopes?: string[];
  authentication?: { type?: string; symmetricKey?: { primaryKey?: string | null; secondaryKey?: string | null } };
}

/** The three registry calls the factory makes; tests may wrap them to count writes. */
export interface IdentityStore {
  get(deviceId: string): Promise<IdentityDoc | undefined>;
  create(body: Record<string, unknown>): Promise<IdentityDoc>;
  update(body: Record<string, unknown>): Promise<IdentityDoc>;
}

function hubError(error: unknown, what: string): FactoryError {
  const message = (error as Error).message;
  const tls = /self[- ]signed|unable to verify|certificate/i.test(message);
  return new FactoryError('HUB_UNAVAILABLE', `${what}: ${message}${tls ? ' (the hub\'s CA is not trusted: set NODE_EXTRA_CA_CERTS=<hub.json caFile>)' : ''}`);
}

export class ServiceIdentityStore implements IdentityStore {
  readonly #registry: InstanceType<typeof Registry>;

  constructor(connectionString: string) {
    try {
      this.#registry = Registry.fromConnectionString(connectionString);
    } catch (error) {
      throw new FactoryError('HUB_INVALID', `--hub: ${(error as Error).message}`);
    }
    // As in the dispatcher's hubClient: the registry's REST client does a TLS handshake per call without a
    // keep-alive agent, and an agent without a timeout keeps idle sockets until the hub closes them, so that a
    // request that picks one up just then fails with "socket hang up".
    const rest = (this.#registry as unknown as { _restApiClient?: { setOptions?: (o: unknown) => void } })._restApiClient;
    rest?.setOptions?.({ http: { agent: new https.Agent({ keepAlive: true, maxSockets: 8, timeout: 60_000 }) } });
  }

  async get(deviceId: string): Promise<IdentityDoc | undefined> {
    try {
      return (await this.#registry.get(deviceId)).responseBody;
    } catch (error) {
      if ((error as Error).name === 'DeviceNotFoundError') return undefined;
      throw hubError(error, `reading ${deviceId}`);
    }
  }

  async create(body: Record<string, unknown>): Promise<IdentityDoc> {
    try {
      return (await this.#registry.create(body as never)).responseBody;
    } catch (error) {
      throw hubError(error, `creating ${String(body.deviceId)}`);
    }
  }

  async update(body: Record<string, unknown>): Promise<IdentityDoc> {
    try {
      return (await this.#registry.update(body as never)).responseBody;
    } catch (error) {
      throw hubError(error, `updating ${String(body.deviceId)}`);
    }
  }
}

export interface WantedIdentity {
  deviceId: string;
  edge: boolean;
  /** The parent gateway's identity as it is now (created or checked earlier in the run). */
  parent?: IdentityDoc;
}

/** What is wrong with an existing identity, in words; empty when it is as wanted. */
export function identityDifferences(existing: IdentityDoc, wanted: WantedIdentity): string[] {
  const changes: string[] = [];
  const isEdge = existing.capabilities?.iotEdge === true;
  if (isEdge !== wanted.edge) changes.push(`capabilities.iotEdge ${isEdge} -> ${wanted.edge}`);
  const parentScope = wanted.parent?.deviceScope ?? '';
  if (wanted.edge) {
    const now = existing.parentScopes ?? [];
    const want = parentScope ? [parentScope] : [];
    if (now.join(',') !== want.join(',')) changes.push(`parentScopes ${JSON.stringify(now)} -> ${JSON.stringify(want)}`);
  } else if ((existing.deviceScope ?? '') !== parentScope) {
    changes.push(`deviceScope ${JSON.stringify(existing.deviceScope ?? '')} -> ${JSON.stringify(parentScope)}`);
  }
  if (existing.status !== undefined && existing.status !== 'enabled') changes.push(`status ${existing.status} -> enabled`);
  return changes;
}

function checkSas(identity: IdentityDoc): void {
  const type = identity.authentication?.type;
  if (type !== undefined && type.toLowerCase() !== 'sas') {
    throw new FactoryError('IDENTITY_CONFLICT', `${identity.deviceId} authenticates with ${type}; the factory provisions SAS identities only (delete it or provision it by hand)`);
  }
}

function scopeFields(wanted: WantedIdentity, existing: IdentityDoc | undefined): Record<string, unknown> {
  const parentScope = wanted.parent?.deviceScope;
  if (wanted.parent && !parentScope) throw new FactoryError('IDENTITY_CONFLICT', `parent ${wanted.parent.deviceId} of ${wanted.deviceId} has no deviceScope (is it an IoT Edge device?)`);
  if (wanted.edge) {
    // An edge device owns its scope (the hub assigns it); keep it when it already is an edge device.
    const own = existing?.capabilities?.iotEdge && existing.deviceScope ? { deviceScope: existing.deviceScope } : {};
    return { ...own, parentScopes: parentScope ? [parentScope] : [] };
  }
  return { deviceScope: parentScope ?? '' };
}

export interface IdentityOutcome {
  action: 'created' | 'updated' | 'unchanged';
  identity: IdentityDoc;
  changes: string[];
}

/**
 * Makes one identity as wanted. `existing` is what a read returned (undefined when missing); `mayCreate` is false
 * when another party (the dispatcher) creates identities, in which case a missing one is a bug of the caller.
 */
export async function ensureIdentity(store: IdentityStore, wanted: WantedIdentity, existing: IdentityDoc | undefined): Promise<IdentityOutcome> {
  if (!existing) {
    const created = await store.create({ deviceId: wanted.deviceId, status: 'enabled', capabilities: { iotEdge: wanted.edge }, ...scopeFields(wanted, undefined) });
    return { action: 'created', identity: created, changes: [] };
  }
  checkSas(existing);
  const changes = identityDifferences(existing, wanted);
  if (changes.length === 0) return { action: 'unchanged', identity: existing, changes };
  const body: Record<string, unknown> = {
    deviceId: wanted.deviceId,
    status: 'enabled',
    capabilities: { iotEdge: wanted.edge },
    ...scopeFields(wanted, existing),
  };
  // Keep the keys: the device may be flashed already, and its bundle names them.
  if (existing.authentication) body.authentication = existing.authentication;
  const updated = await store.update(body);
  return { action: 'updated', identity: updated, changes };
}

/** `HostName=...;DeviceId=...;SharedAccessKey=...` for a device, from its identity. */
export function deviceConnectionString(hostName: string, identity: IdentityDoc, gatewayHostName?: string): string {
  const key = identity.authentication?.symmetricKey?.primaryKey;
  if (!key) throw new FactoryError('IDENTITY_CONFLICT', `${identity.deviceId} has no primary key to put in its bundle`);
  return `HostName=${hostName};DeviceId=${identity.deviceId};SharedAccessKey=${key}${gatewayHostName ? `;GatewayHostName=${gatewayHostName}` : ''}`;
}
