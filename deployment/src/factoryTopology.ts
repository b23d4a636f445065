import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';

// The factory's input: a small topology file naming the gateways per ISA-95 layer, their parents, and the MCUs on
// each gateway's serial ports with their firmware. Everything is checked here, before anything touches IoT Hub,
// the dispatcher or the output folder, and every refusal carries a stable code and the JSON path it is about
// (deployment/factory/topology.schema.json describes the same shape for editors).

export type FactoryErrorCode =
  | 'USAGE'
  | 'TOPOLOGY_NOT_FOUND'
  | 'TOPOLOGY_NOT_JSON'
  | 'TOPOLOGY_TYPE'
  | 'TOPOLOGY_MISSING_KEY'
  | 'TOPOLOGY_UNKNOWN_KEY'
  | 'TOPOLOGY_ID_INVALID'
  | 'TOPOLOGY_DUPLICATE_ID'
  | 'TOPOLOGY_DUPLICATE_PORT'
  | 'TOPOLOGY_NO_GATEWAYS'
  | 'TOPOLOGY_LAYER_INVALID'
  | 'TOPOLOGY_PARENT_UNKNOWN'
  | 'TOPOLOGY_PARENT_LAYER'
  | 'TOPOLOGY_PARENT_MISSING'
  | 'TOPOLOGY_PARENT_NOT_ALLOWED'
  | 'TOPOLOGY_CYCLE'
  | 'TOPOLOGY_UPDATE_ID_INVALID'
  | 'TOPOLOGY_HOSTNAME_INVALID'
  | 'TOPOLOGY_PORT_INVALID'
  | 'TOPOLOGY_BUNDLE_NOT_FOUND'
  | 'TOPOLOGY_SHA256_INVALID'
  | 'HUB_INVALID'
  | 'HUB_UNAVAILABLE'
  | 'IDENTITY_CONFLICT'
  | 'DISPATCHER_UNAVAILABLE'
  | 'DISPATCHER_REFUSED'
  | 'DISPATCHER_CONFLICT'
  | 'UPDATE_NOT_IN_CATALOG'
  | 'BUNDLE_HASH_MISMATCH'
  | 'BUNDLE_INVALID'
  | 'OUTPUT_FAILED'
  | 'INTERNAL';

export class FactoryError extends Error {
  override readonly name = 'FactoryError';
  readonly code: FactoryErrorCode;
  /** JSON pointer into the topology file, when the error is about it. */
  readonly path: string | undefined;

  constructor(code: FactoryErrorCode, message: string, path?: string) {
    super(path !== undefined ? `${path || '(root)'}: ${message}` : message);
    this.code = code;
    this.path = path;
  }

  toJSON(): { code: FactoryErrorCode; message: string; path?: string } {
    return { code: this.code, message: this.message, ...(this.path !== undefined ? { path: this.path } : {}) };
  }
}

export interface McuSpec {
  id: string;
  port: string;
  firmware?: string;
  baudRate?: number;
}

export interface GatewaySpec {
  id: string;
  layer: number;
  parent?: string;
  /** The host name children and config.toml use; default `<id>` or `<id>.<hostnameDomain>`. */
  hostname: string;
  software?: string;
  /** Absolute path of the first-boot offline bundle. */
  firstBootBundle?: string;
  firstBootBundleSha256?: string;
  mcus: McuSpec[];
}

export interface Topology {
  /** Gateways ordered by layer (parents before children), then as written. */
  gateways: GatewaySpec[];
  file?: string;
}

/** IoT Hub's device id rule (the emulator's registry and the dispatcher's API use the same one). */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$/;
/** `provider/name@version` with ADU's rules for each part. */
export const UPDATE_ID_PATTERN = /^[A-Za-z0-9.-]{1,64}\/[A-Za-z0-9.-]{1,64}@\d+(\.\d+){1,3}$/;
/** RFC 1123 host name (what aziot-edged accepts as `hostname`/`parent_hostname`). */
const HOSTNAME_PATTERN = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const SHA256_PATTERN = /^[0-9a-f]{64}$/;
/** The maximum nesting IoT Edge supports is 5 layers below the top. */
export const MAX_LAYER = 5;

const TOP_KEYS = new Set(['$schema', 'hostnameDomain', 'gateways']);
const GATEWAY_KEYS = new Set(['id', 'layer', 'parent', 'hostname', 'software', 'firstBootBundle', 'firstBootBundleSha256', 'mcus']);
const MCU_KEYS = new Set(['id', 'port', 'firmware', 'baudRate']);

type JsonRecord = Record<string, unknown>;

function isRecord(value: unknown): value is JsonRecord {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function pointer(...parts: Array<string | number>): string {
  return parts.map((p) => `/${String(p).replaceAll('~', '~0').replaceAll('/', '~1')}`).join('');
}

function checkKeys(value: JsonRecord, allowed: Set<string>, at: string, required: readonly string[]): void {
  for (const key of Object.keys(value)) {
    if (!allowed.has(key)) throw new FactoryError('TOPOLOGY_UNKNOWN_KEY', `unknown key ${JSON.stringify(key)} (allowed: ${[...allowed].join(', ')})`, `${at}${pointer(key)}`);
  }
  for (const key of required) {
    if (value[key] === undefined) throw new FactoryError('TOPOLOGY_MISSING_KEY', `${JSON.stringify(key)} is required`, `${at}${pointer(key)}`);
  }
}

function str(value: unknown, at: string): string {
  if (typeof value !== 'string') throw new FactoryError('TOPOLOGY_TYPE', `must be a string`, at);
  return value;
}

function deviceId(value: unknown, at: string): string {
  const id = str(value, at);
  if (!DEVICE_ID_PATTERN.test(id)) {
    throw new FactoryError('TOPOLOGY_ID_INVALID', `${JSON.stringify(id)} is not a valid IoT Hub device id (1-128 of A-Z a-z 0-9 - : . + % _ # * ? ! ( ) , = @ ; $ ')`, at);
  }
  return id;
}

function updateId(value: unknown, at: string): string {
  const id = str(value, at);
  if (!UPDATE_ID_PATTERN.test(id)) throw new FactoryError('TOPOLOGY_UPDATE_ID_INVALID', `${JSON.stringify(id)} is not provider/name@version (e.g. contoso/gateway-app@1.0.0)`, at);
  return id;
}

function hostname(value: string, at: string): string {
  if (!HOSTNAME_PATTERN.test(value)) throw new FactoryError('TOPOLOGY_HOSTNAME_INVALID', `${JSON.stringify(value)} is not a valid host name`, at);
  return value;
}

/** Checks a parsed topology document; relative bundle paths are resolved against `baseDir`. */
export function validateTopology(document: unknown, baseDir: string): Topology {
  if (!isRecord(document)) throw new FactoryError('TOPOLOGY_TYPE', 'the topology must be a JSON object', '');
  checkKeys(document, TOP_KEYS, '', ['gateways']);
  const domain = document.hostnameDomain === undefined ? undefined : hostname(str(document.hostnameDomain, '/hostnameDomain'), '/hostnameDomain');
  if (!Array.isArray(document.gateways)) throw new FactoryError('TOPOLOGY_TYPE', 'must be an array', '/gateways');
  if (document.gateways.length === 0) throw new FactoryError('TOPOLOGY_NO_GATEWAYS', 'at least one gateway is needed', '/gateways');

  const ids = new Map<string, string>();
  const claim = (id: string, at: string): void => {
    const first = ids.get(id);
    if (first !== undefined) throw new FactoryError('TOPOLOGY_DUPLICATE_ID', `${JSON.stringify(id)} is used already at ${first} (device ids are unique in an IoT Hub)`, at);
    ids.set(id, at);
  };
  const hostnames = new Map<string, string>();

  const gateways: Array<GatewaySpec & { at: string }> = document.gateways.map((raw: unknown, index) => {
    const at = pointer('gateways', index);
    if (!isRecord(raw)) throw new FactoryError('TOPOLOGY_TYPE', 'a gateway must be an object', at);
    checkKeys(raw, GATEWAY_KEYS, at, ['id', 'layer']);
    const id = deviceId(raw.id, `${at}/id`);
    claim(id, `${at}/id`);
    const layer = raw.layer;
    if (typeof layer !== 'number' || !Number.isInteger(layer) || layer < 0 || layer > MAX_LAYER) {
      throw new FactoryError('TOPOLOGY_LAYER_INVALID', `must be an integer from 0 (top, connected to IoT Hub) to ${MAX_LAYER}`, `${at}/layer`);
    }
    const gateway: GatewaySpec & { at: string } = { at, id, layer, hostname: '', mcus: [] };
    if (raw.parent !== undefined) gateway.parent = deviceId(raw.parent, `${at}/parent`);
    const host = raw.hostname === undefined ? (domain ? `${id}.${domain}` : id) : str(raw.hostname, `${at}/hostname`);
    if (raw.hostname === undefined && !HOSTNAME_PATTERN.test(host)) {
      throw new FactoryError('TOPOLOGY_HOSTNAME_INVALID', `${JSON.stringify(host)} (from the id) is not a valid host name: give the gateway a "hostname"`, `${at}/id`);
    }
    gateway.hostname = hostname(host.toLowerCase(), `${at}/hostname`);
    const sameHost = hostnames.get(gateway.hostname);
    if (sameHost !== undefined) throw new FactoryError('TOPOLOGY_HOSTNAME_INVALID', `host name ${gateway.hostname} is used already by ${sameHost}`, `${at}/hostname`);
    hostnames.set(gateway.hostname, at);
    if (raw.software !== undefined) gateway.software = updateId(raw.software, `${at}/software`);
    if (raw.firstBootBundle !== undefined) {
      const file = path.resolve(baseDir, str(raw.firstBootBundle, `${at}/firstBootBundle`));
      if (!existsSync(file) || !statSync(file).isFile()) throw new FactoryError('TOPOLOGY_BUNDLE_NOT_FOUND', `no file ${file}`, `${at}/firstBootBundle`);
      gateway.firstBootBundle = file;
    }
    if (raw.firstBootBundleSha256 !== undefined) {
      const hash = str(raw.firstBootBundleSha256, `${at}/firstBootBundleSha256`);
      if (!SHA256_PATTERN.test(hash)) throw new FactoryError('TOPOLOGY_SHA256_INVALID', 'must be 64 lower-case hex digits', `${at}/firstBootBundleSha256`);
      if (gateway.firstBootBundle === undefined) throw new FactoryError('TOPOLOGY_MISSING_KEY', '"firstBootBundle" is required with firstBootBundleSha256', `${at}/firstBootBundle`);
      gateway.firstBootBundleSha256 = hash;
    }
    if (raw.mcus !== undefined) {
      if (!Array.isArray(raw.mcus)) throw new FactoryError('TOPOLOGY_TYPE', 'must be an array', `${at}/mcus`);
      const ports = new Map<string, string>();
      gateway.mcus = raw.mcus.map((rawMcu: unknown, m) => {
        const mAt = `${at}${pointer('mcus', m)}`;
        if (!isRecord(rawMcu)) throw new FactoryError('TOPOLOGY_TYPE', 'an MCU must be an object', mAt);
        checkKeys(rawMcu, MCU_KEYS, mAt, ['id', 'port']);
        const mcuId = deviceId(rawMcu.id, `${mAt}/id`);
        claim(mcuId, `${mAt}/id`);
        const port = str(rawMcu.port, `${mAt}/port`);
        if (!/^(\/dev\/\S+|tcp:\/\/\S+:\d+|unix:\/\/\/\S+)$/.test(port)) {
          throw new FactoryError('TOPOLOGY_PORT_INVALID', `${JSON.stringify(port)} is not a serial port (/dev/..., tcp://host:port or unix:///path)`, `${mAt}/port`);
        }
        const samePort = ports.get(port);
        if (samePort !== undefined) throw new FactoryError('TOPOLOGY_DUPLICATE_PORT', `port ${port} is used already by ${samePort} on this gateway`, `${mAt}/port`);
        ports.set(port, mcuId);
        const mcu: McuSpec = { id: mcuId, port };
        if (rawMcu.firmware !== undefined) mcu.firmware = updateId(rawMcu.firmware, `${mAt}/firmware`);
        if (rawMcu.baudRate !== undefined) {
          if (typeof rawMcu.baudRate !== 'number' || !Number.isInteger(rawMcu.baudRate) || rawMcu.baudRate <= 0) {
            throw new FactoryError('TOPOLOGY_TYPE', 'must be a positive integer', `${mAt}/baudRate`);
          }
          mcu.baudRate = rawMcu.baudRate;
        }
        return mcu;
      });
    }
    return gateway;
  });

  const byId = new Map(gateways.map((g) => [g.id, g]));
  for (const gateway of gateways) {
    if (gateway.parent === undefined) {
      if (gateway.layer !== 0) throw new FactoryError('TOPOLOGY_PARENT_MISSING', `a gateway in layer ${gateway.layer} needs a parent in layer ${gateway.layer - 1}`, `${gateway.at}/parent`);
      continue;
    }
    if (gateway.layer === 0) throw new FactoryError('TOPOLOGY_PARENT_NOT_ALLOWED', 'a layer 0 gateway connects to IoT Hub itself and has no parent', `${gateway.at}/parent`);
    if (gateway.parent === gateway.id) throw new FactoryError('TOPOLOGY_CYCLE', 'a gateway cannot be its own parent', `${gateway.at}/parent`);
    const parent = byId.get(gateway.parent);
    if (!parent) {
      const what = ids.has(gateway.parent) ? 'is an MCU, not a gateway' : 'is not a gateway of this topology';
      throw new FactoryError('TOPOLOGY_PARENT_UNKNOWN', `${JSON.stringify(gateway.parent)} ${what}`, `${gateway.at}/parent`);
    }
    if (parent.layer !== gateway.layer - 1) {
      throw new FactoryError('TOPOLOGY_PARENT_LAYER', `parent ${parent.id} is in layer ${parent.layer}; a gateway in layer ${gateway.layer} needs its parent in layer ${gateway.layer - 1}`, `${gateway.at}/parent`);
    }
  }
  // With parents exactly one layer up a cycle cannot exist; walk the chains anyway so that a future relaxation
  // of the layer rule cannot silently let one through.
  for (const gateway of gateways) {
    const seen = new Set<string>();
    for (let at: GatewaySpec | undefined = gateway; at; at = at.parent ? byId.get(at.parent) : undefined) {
      if (seen.has(at.id)) throw new FactoryError('TOPOLOGY_CYCLE', `the parents of ${gateway.id} form a cycle through ${at.id}`, `${gateway.at}/parent`);
      seen.add(at.id);
    }
  }

  const ordered = [...gateways].sort((a, b) => a.layer - b.layer);
  return { gateways: ordered.map(({ at: _at, ...g }) => g) };
}

/** Reads and checks a topology file. */
export function readTopology(file: string): Topology {
  const absolute = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    throw new FactoryError('TOPOLOGY_NOT_FOUND', `cannot read topology ${absolute}: ${(error as Error).message}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new FactoryError('TOPOLOGY_NOT_JSON', `${absolute} is not JSON: ${(error as Error).message}`);
  }
  return { ...validateTopology(document, path.dirname(absolute)), file: absolute };
}
