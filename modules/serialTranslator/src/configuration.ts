import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';

// What the translator is told: module-wide settings from the environment (the deployment's `env`), and the
// MCUs from the module twin's desired `mcus` (hot: a changed port re-opens the link). Every problem is named,
// reported in the module's reported properties, and leaves the offending MCU out instead of stopping the module.

export interface ConfigurationProblem {
  /** The MCU the problem belongs to, when it is about one. */
  mcuId?: string;
  setting: string;
  message: string;
}

export type McuPort = { kind: 'serial'; path: string } | { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** An app-specific health check: one SMP request the new image must answer without an error. */
export interface McuHealthCheck {
  smp?: { group: number; command: number; op: 'read' | 'write'; body: Record<string, string | number | boolean> };
  timeoutSeconds?: number;
}

export interface McuConfiguration {
  mcuId: string;
  port: McuPort;
  /** The port as configured, to notice a change. */
  portText: string;
  baudRate: number;
  /** PEM of the MCUboot signing key's public half: images not signed by it are refused. */
  publicKey: string;
  /** The MCU identity's connection string; absent when it has no key yet (flashing still works). */
  deviceConnectionString?: string;
  healthCheck?: McuHealthCheck;
  slotSize?: number;
  smp?: { timeoutMs?: number; retries?: number };
  rebootTimeoutMs?: number;
}

export interface TranslatorSettings {
  stateDir: string;
  /** JSON file {mcuId: primaryKey} on the module's volume: the MCU identities' keys, kept out of the twin. */
  mcuKeysFile: string;
  /** Whether SERIAL_MCU_KEYS_FILE named it (then a missing file is a problem) or it is the default in the state dir. */
  mcuKeysFileRequired: boolean;
  /** Accept `deviceConnectionString` from the twin (visible in the cloud); off unless set. */
  allowTwinKeys: boolean;
  /** Content cache base URL (http://contentCache:8080) for the twin-desired firmware path. */
  contentCacheUrl: string | undefined;
  defaultBaudRate: number;
  /** MCUs configured by environment (SERIAL_MCUS, same shape as the twin's `mcus`); the twin overrides per MCU. */
  environmentMcus: Record<string, unknown>;
  progressPercentStep: number;
  progressIntervalMs: number;
  iotHubHostName: string;
  gatewayHostName: string | undefined;
}

export function settingsFromEnvironment(env: NodeJS.ProcessEnv): { settings: TranslatorSettings; problems: ConfigurationProblem[] } {
  const problems: ConfigurationProblem[] = [];
  const number = (name: string, fallback: number, min: number, max: number): number => {
    const text = env[name];
    if (text === undefined || text === '') return fallback;
    const value = Number(text);
    if (!Number.isFinite(value) || value < min || value > max) {
      problems.push({ setting: name, message: `must be a number in ${min}..${max}; using ${fallback}` });
      return fallback;
    }
    return value;
  };
  let environmentMcus: Record<string, unknown> = {};
  if (env.SERIAL_MCUS) {
    try {
      const parsed = JSON.parse(env.SERIAL_MCUS) as unknown;
      if (isRecord(parsed)) environmentMcus = parsed;
      else problems.push({ setting: 'SERIAL_MCUS', message: 'must be a JSON object of MCUs' });
    } catch (error) {
      problems.push({ setting: 'SERIAL_MCUS', message: `is not JSON: ${(error as Error).message}` });
    }
  }
  const stateDir = env.SERIAL_STATE_DIR || '/var/lib/edge-ota/serial-translator';
  return {
    settings: {
      stateDir,
      mcuKeysFile: env.SERIAL_MCU_KEYS_FILE || path.join(stateDir, 'mcu-keys.json'),
      mcuKeysFileRequired: Boolean(env.SERIAL_MCU_KEYS_FILE),
      allowTwinKeys: env.SERIAL_ALLOW_TWIN_KEYS === '1' || env.SERIAL_ALLOW_TWIN_KEYS === 'true',
      contentCacheUrl: env.SERIAL_CONTENT_CACHE_URL || undefined,
      defaultBaudRate: number('SERIAL_DEFAULT_BAUD_RATE', 115200, 300, 4_000_000),
      environmentMcus,
      progressPercentStep: number('SERIAL_PROGRESS_PERCENT_STEP', 5, 1, 100),
      progressIntervalMs: number('SERIAL_PROGRESS_INTERVAL_MS', 2000, 100, 600_000),
      iotHubHostName: env.IOTEDGE_IOTHUBHOSTNAME ?? '',
      gatewayHostName: env.IOTEDGE_GATEWAYHOSTNAME || undefined,
    },
    problems,
  };
}

/** Reads the keys file; a missing or broken file is a problem, not a crash (the MCUs can still be flashed). */
export function readMcuKeys(settings: TranslatorSettings): { keys: Map<string, string>; problems: ConfigurationProblem[] } {
  const keys = new Map<string, string>();
  let text: string;
  try {
    text = readFileSync(settings.mcuKeysFile, 'utf8');
  } catch (error) {
    const missing = (error as NodeJS.ErrnoException).code === 'ENOENT' && !settings.mcuKeysFileRequired;
    return { keys, problems: missing ? [] : [{ setting: 'SERIAL_MCU_KEYS_FILE', message: (error as Error).message }] };
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (!isRecord(parsed)) throw new Error('not a JSON object {mcuId: primaryKey}');
    for (const [mcuId, key] of Object.entries(parsed)) if (typeof key === 'string' && key) keys.set(mcuId, key);
    return { keys, problems: [] };
  } catch (error) {
    return { keys, problems: [{ setting: 'SERIAL_MCU_KEYS_FILE', message: (error as Error).message }] };
  }
}

const MCU_ID = /^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$/;

/** The MCUs from the environment overlaid by the twin's desired `mcus` (null removes one, as twin patches do). */
export function parseMcus(
  desiredMcus: unknown,
  settings: TranslatorSettings,
  keys: Map<string, string>,
): { mcus: Map<string, McuConfiguration>; problems: ConfigurationProblem[] } {
  const problems: ConfigurationProblem[] = [];
  const mcus = new Map<string, McuConfiguration>();
  if (desiredMcus !== undefined && desiredMcus !== null && !isRecord(desiredMcus)) {
    problems.push({ setting: 'mcus', message: 'must be an object keyed by MCU id' });
  }
  const merged: Record<string, unknown> = { ...settings.environmentMcus };
  if (isRecord(desiredMcus)) {
    for (const [mcuId, value] of Object.entries(desiredMcus)) {
      if (value === null) delete merged[mcuId];
      else merged[mcuId] = isRecord(value) && isRecord(merged[mcuId]) ? { ...(merged[mcuId] as object), ...value } : value;
    }
  }
  for (const [mcuId, value] of Object.entries(merged)) {
    const problem = (setting: string, message: string): void => void problems.push({ mcuId, setting: `mcus.${mcuId}.${setting}`, message });
    if (!MCU_ID.test(mcuId)) {
      problem('', 'is not a valid IoT Hub device id');
      continue;
    }
    if (!isRecord(value)) {
      problem('', 'must be an object');
      continue;
    }
    const portText = typeof value.port === 'string' ? value.port : '';
    const port = parsePort(portText);
    if (!port) {
      problem('port', 'must be a device path (/dev/serial/by-id/...), tcp://host:port or unix:///path');
      continue;
    }
    const baudRate = value.baudRate === undefined ? settings.defaultBaudRate : value.baudRate;
    if (typeof baudRate !== 'number' || !Number.isInteger(baudRate) || baudRate < 300 || baudRate > 4_000_000) {
      problem('baudRate', 'must be an integer in 300..4000000');
      continue;
    }
    const publicKey = typeof value.publicKey === 'string' ? value.publicKey : '';
    try {
      createPublicKey(publicKey);
    } catch {
      problem('publicKey', 'must be the PEM of the MCU signing key (public half)');
      continue;
    }
    const mcu: McuConfiguration = { mcuId, port, portText, baudRate, publicKey };
    if (value.slotSize !== undefined) {
      if (typeof value.slotSize === 'number' && Number.isInteger(value.slotSize) && value.slotSize > 0) mcu.slotSize = value.slotSize;
      else problem('slotSize', 'must be a positive integer (bytes); ignored');
    }
    if (value.rebootTimeoutMs !== undefined) {
      if (typeof value.rebootTimeoutMs === 'number' && value.rebootTimeoutMs >= 1000) mcu.rebootTimeoutMs = value.rebootTimeoutMs;
      else problem('rebootTimeoutMs', 'must be a number >= 1000; ignored');
    }
    if (isRecord(value.smp)) {
      const { timeoutMs, retries } = value.smp;
      mcu.smp = {
        ...(typeof timeoutMs === 'number' && timeoutMs >= 50 ? { timeoutMs } : {}),
        ...(typeof retries === 'number' && Number.isInteger(retries) && retries >= 0 && retries <= 20 ? { retries } : {}),
      };
    }
    if (value.healthCheck !== undefined) {
      const check = parseHealthCheck(value.healthCheck);
      if (typeof check === 'string') problem('healthCheck', `${check}; ignored`);
      else mcu.healthCheck = check;
    }
    // The identity's key: the keys file on the module's volume first; the twin only when explicitly allowed.
    const key = keys.get(mcuId);
    if (key) {
      mcu.deviceConnectionString = `HostName=${settings.iotHubHostName};DeviceId=${mcuId};SharedAccessKey=${key}`;
    } else if (typeof value.deviceConnectionString === 'string') {
      if (settings.allowTwinKeys) mcu.deviceConnectionString = value.deviceConnectionString;
      else problem('deviceConnectionString', 'ignored: keys in the twin are visible in the cloud; use SERIAL_MCU_KEYS_FILE or set SERIAL_ALLOW_TWIN_KEYS=1');
    }
    if (mcu.deviceConnectionString && settings.gatewayHostName && !/;GatewayHostName=/i.test(mcu.deviceConnectionString)) {
      // The MCU is a child of this gateway: its identity connects through the gateway's edgeHub, never directly.
      mcu.deviceConnectionString += `;GatewayHostName=${settings.gatewayHostName}`;
    }
    mcus.set(mcuId, mcu);
  }
  return { mcus, problems };
}

function parsePort(text: string): McuPort | undefined {
  const tcp = /^tcp:\/\/([^:/]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(text);
  if (tcp) {
    const port = Number(tcp[2]);
    return port > 0 && port < 65536 ? { kind: 'tcp', host: tcp[1]!.replace(/^\[|\]$/g, ''), port } : undefined;
  }
  if (text.startsWith('unix://')) return text.length > 7 && text[7] === '/' ? { kind: 'unix', path: text.slice(7) } : undefined;
  return text.startsWith('/') ? { kind: 'serial', path: text } : undefined;
}

function parseHealthCheck(value: unknown): McuHealthCheck | string {
  if (!isRecord(value)) return 'must be an object';
  const check: McuHealthCheck = {};
  if (value.timeoutSeconds !== undefined) {
    if (typeof value.timeoutSeconds !== 'number' || value.timeoutSeconds < 1 || value.timeoutSeconds > 600) return 'timeoutSeconds must be 1..600';
    check.timeoutSeconds = value.timeoutSeconds;
  }
  if (value.smp !== undefined) {
    const smp = value.smp;
    if (!isRecord(smp) || typeof smp.group !== 'number' || typeof smp.command !== 'number') return 'smp must be {group, command, op?, body?}';
    const body: Record<string, string | number | boolean> = {};
    if (isRecord(smp.body)) {
      for (const [k, v] of Object.entries(smp.body)) {
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') body[k] = v;
        else return `smp.body.${k} must be a string, number or boolean`;
      }
    }
    check.smp = { group: smp.group, command: smp.command, op: smp.op === 'write' ? 'write' : 'read', body };
  }
  return check;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
