import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { TrustStore, formatUpdateId, isOtaError, readBundle, readRootPublicKeyFileSync } from '@edge-ota/common';
import type { GatewaySpec } from './factoryTopology.ts';
import { FactoryError } from './factoryTopology.ts';

// Per-gateway output: everything an installer copies onto one gateway at the factory. Files are written
// atomically (a temporary file in the same folder, fsynced, then renamed over the old one), and a file whose
// content and mode are already right is not touched at all, so a second run keeps every mtime.

/** Where the files go on the gateway; config.toml and the README name these paths. */
export const INSTALL_PATHS = {
  config: '/etc/aziot/config.toml',
  deviceKey: '/var/secrets/aziot/edge-ota-device-id.key',
  trustBundle: '/var/aziot/certs/edge-ota-trust-bundle.pem',
  edgeCaCert: '/var/aziot/certs/edge-ota-edge-ca.pem',
  edgeCaKey: '/var/aziot/secrets/edge-ota-edge-ca.key.pem',
  usbDropIn: '/media/edge-ota-usb',
} as const;

export const BUNDLE_FILES = {
  config: 'config.toml',
  connectionString: 'connection-string.txt',
  deviceKey: 'device-id.key',
  trustBundle: 'trust-bundle.pem',
  edgeCaCert: 'edge-ca.pem',
  edgeCaKey: 'edge-ca.key.pem',
  mcuKeys: 'mcu-keys.json',
  firstBoot: 'first-boot.otabundle',
  summary: 'gateway.json',
} as const;

export type FileAction = 'created' | 'updated' | 'unchanged' | 'removed';

const SECRET_MODE = 0o600;
const PUBLIC_MODE = 0o644;

function tempName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

async function modeOf(file: string): Promise<number | undefined> {
  try {
    const info = await stat(file);
    return info.isFile() ? info.mode & 0o777 : undefined;
  } catch {
    return undefined;
  }
}

/** Writes `content` to `file` with `mode` unless it is there already; atomic. */
export async function writeFileIfChanged(file: string, content: string | Buffer, mode: number): Promise<FileAction> {
  const data = typeof content === 'string' ? Buffer.from(content) : content;
  const currentMode = await modeOf(file);
  if (currentMode !== undefined) {
    const current = await readFile(file);
    if (current.equals(data)) {
      if (currentMode === mode) return 'unchanged';
      await chmod(file, mode);
      return 'updated';
    }
  }
  await mkdir(path.dirname(file), { recursive: true });
  const temp = tempName(file);
  try {
    // The mode is set at creation, so a secret is never readable by others, not even for a moment.
    const handle = await open(temp, 'wx', mode);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await chmod(temp, mode); // the umask may have narrowed it
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw new FactoryError('OUTPUT_FAILED', `writing ${file}: ${(error as Error).message}`);
  }
  return currentMode === undefined ? 'created' : 'updated';
}

export async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

/**
 * Copies a (possibly large) file by streaming, checking the bytes written against the source's sha256 and, when
 * given, the expected one. Unchanged when the target already has that hash.
 */
export async function copyFileChecked(source: string, target: string, expectedSha256: string | undefined): Promise<{ action: FileAction; sha256: string; bytes: number }> {
  const sourceHash = await sha256OfFile(source);
  if (expectedSha256 !== undefined && sourceHash !== expectedSha256) {
    throw new FactoryError('BUNDLE_HASH_MISMATCH', `${source} has sha256 ${sourceHash}, the topology expects ${expectedSha256}`);
  }
  const bytes = (await stat(source)).size;
  const currentMode = await modeOf(target);
  if (currentMode !== undefined && (await sha256OfFile(target)) === sourceHash) {
    if (currentMode === PUBLIC_MODE) return { action: 'unchanged', sha256: sourceHash, bytes };
    await chmod(target, PUBLIC_MODE);
    return { action: 'updated', sha256: sourceHash, bytes };
  }
  await mkdir(path.dirname(target), { recursive: true });
  const temp = tempName(target);
  const copied = createHash('sha256');
  try {
    await pipeline(
      createReadStream(source),
      new Transform({
        transform(chunk: Buffer, _encoding, done) {
          copied.update(chunk);
          done(null, chunk);
        },
      }),
      createWriteStream(temp, { flags: 'wx', mode: PUBLIC_MODE }),
    );
    const handle = await open(temp, 'r+');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    const copiedHash = copied.digest('hex');
    // The source changed while it was read (or the disk lied): never leave a bundle that is not the one hashed.
    if (copiedHash !== sourceHash || (await sha256OfFile(temp)) !== sourceHash) {
      throw new FactoryError('BUNDLE_HASH_MISMATCH', `copy of ${source} does not have the sha256 ${sourceHash} it had when read`);
    }
    await chmod(temp, PUBLIC_MODE);
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    if (error instanceof FactoryError) throw error;
    throw new FactoryError('OUTPUT_FAILED', `copying ${source} to ${target}: ${(error as Error).message}`);
  }
  return { action: currentMode === undefined ? 'created' : 'updated', sha256: sourceHash, bytes };
}

async function removeIfPresent(file: string): Promise<FileAction | undefined> {
  if ((await modeOf(file)) === undefined) return undefined;
  await rm(file, { force: true });
  return 'removed';
}

/** What a verified first-boot bundle holds, for gateway.json. */
export interface FirstBootInfo {
  updateId: string;
  expiresDateTime?: string;
  verified: true;
  /** The sha256 of the file that was verified; the copy must have it. */
  sha256?: string;
}

export function trustStoreFrom(rootFiles: readonly string[]): TrustStore {
  try {
    return new TrustStore({ rootKeys: rootFiles.map((file) => readRootPublicKeyFileSync(file)) });
  } catch (error) {
    throw new FactoryError('USAGE', `--trust: ${(error as Error).message}`);
  }
}

/**
 * Reads the whole bundle as the orchestrator's USB drop-in will: the signature chain against the trusted roots (or
 * ADU's), every file against its signed size and sha256. An expired manifest is refused too, since the gateway would.
 */
export async function verifyFirstBootBundle(file: string, trustStore: TrustStore, gatewayId: string): Promise<FirstBootInfo> {
  let bundle;
  try {
    bundle = await readBundle(file, { trustStore });
  } catch (error) {
    const code = isOtaError(error) ? `${error.code}: ` : '';
    throw new FactoryError('BUNDLE_INVALID', `first-boot bundle of ${gatewayId} (${file}) does not verify: ${code}${(error as Error).message}; nothing was changed`);
  }
  const expires = bundle.manifest.edgeOta?.expiresDateTime;
  if (expires && Date.parse(expires) <= Date.now()) {
    throw new FactoryError('BUNDLE_INVALID', `first-boot bundle of ${gatewayId} (${file}) expired at ${expires}; nothing was changed`);
  }
  return { updateId: formatUpdateId(bundle.manifest.updateId), ...(expires ? { expiresDateTime: expires } : {}), verified: true };
}

function tomlString(value: string): string {
  return JSON.stringify(value); // TOML basic strings use the same escapes as JSON for what can appear here
}

export interface GatewayBundleInput {
  gateway: GatewaySpec;
  parent?: GatewaySpec;
  iothubHostName: string;
  deviceKey: string;
  connectionString: string;
  /** PEM of the trust bundle (hub.json caFile or --trust-bundle), if any. */
  trustBundlePem?: string;
  /** MCU id -> primary key (SERIAL_MCU_KEYS_FILE of the serial translator). */
  mcuKeys: Record<string, string>;
  /** What the first-boot bundle holds, when it was verified (--trust). */
  firstBootInfo?: FirstBootInfo;
  /** The gateway's edge CA (certificate chain to the hierarchy root, and key), with --edge-ca-dir. */
  edgeCa?: { chainPem: string; keyPem: string };
}

/** /etc/aziot/config.toml for IoT Edge 1.6, manual provisioning with the device's SAS key from a file. */
export function renderConfigToml(input: Omit<GatewayBundleInput, 'deviceKey' | 'connectionString' | 'mcuKeys'>): string {
  const edgeCa = input.edgeCa
    ? [
      '',
      '# The edge CA issues the server certificates of edgeHub and of the API proxy (for hostname above); it chains to',
      '# the root in trust_bundle_cert, which every layer of the hierarchy trusts.',
      '[edge_ca]',
      `cert = ${tomlString(`file://${INSTALL_PATHS.edgeCaCert}`)}`,
      `pk = ${tomlString(`file://${INSTALL_PATHS.edgeCaKey}`)}`,
    ]
    : ['', '# No [edge_ca]: aziot-edged makes a quickstart edge CA that no child trusts. Run the factory with --edge-ca-dir for a hierarchy.'];
  const { gateway, parent } = input;
  const lines = [
    `# /etc/aziot/config.toml of gateway ${gateway.id} (IoT Edge 1.6), written by the edge-ota factory (npm run factory).`,
    '# Apply with `sudo iotedge config apply`. Top-level keys must come before the first [table].',
    '',
    `hostname = ${tomlString(gateway.hostname)}`,
  ];
  if (parent) {
    lines.push(
      `# The parent gateway (layer ${parent.layer}): edgeHub connects upstream through it, images come from $upstream:443.`,
      `parent_hostname = ${tomlString(parent.hostname)}`,
    );
  }
  if (input.trustBundlePem) lines.push(`trust_bundle_cert = ${tomlString(`file://${INSTALL_PATHS.trustBundle}`)}`);
  lines.push(
    '',
    '[provisioning]',
    'source = "manual"',
    `iothub_hostname = ${tomlString(input.iothubHostName)}`,
    `device_id = ${tomlString(gateway.id)}`,
    '',
    '[provisioning.authentication]',
    'method = "sas"',
    `# The primary key as raw bytes (device-id.key of this bundle), readable by aziotks only.`,
    `device_id_pk = { uri = ${tomlString(`file://${INSTALL_PATHS.deviceKey}`)} }`,
    ...edgeCa,
    '',
    '[agent]',
    'name = "edgeAgent"',
    'type = "docker"',
    '',
    '[agent.config]',
    `image = ${tomlString(parent ? '$upstream:443/azureiotedge-agent:1.6' : 'mcr.microsoft.com/azureiotedge-agent:1.6')}`,
    '',
    '[connect]',
    'workload_uri = "unix:///var/run/iotedge/workload.sock"',
    'management_uri = "unix:///var/run/iotedge/mgmt.sock"',
    '',
    '[listen]',
    'workload_uri = "fd://aziot-edged.workload.socket"',
    'management_uri = "fd://aziot-edged.mgmt.socket"',
    '',
  );
  return lines.join('\n');
}

export interface BundleFileResult {
  file: string;
  action: FileAction;
}

/** Writes (or confirms) one gateway's folder `<outDir>/<gatewayId>/`. */
export async function writeGatewayBundle(outDir: string, input: GatewayBundleInput): Promise<BundleFileResult[]> {
  const { gateway, parent } = input;
  const dir = path.join(outDir, gateway.id);
  const results: BundleFileResult[] = [];
  const put = async (name: string, content: string | Buffer, mode: number): Promise<void> => {
    const file = path.join(dir, name);
    results.push({ file, action: await writeFileIfChanged(file, content, mode) });
  };
  const drop = async (name: string): Promise<void> => {
    const file = path.join(dir, name);
    const action = await removeIfPresent(file);
    if (action) results.push({ file, action });
  };

  await put(BUNDLE_FILES.config, renderConfigToml(input), PUBLIC_MODE);
  await put(BUNDLE_FILES.connectionString, `${input.connectionString}\n`, SECRET_MODE);
  await put(BUNDLE_FILES.deviceKey, Buffer.from(input.deviceKey, 'base64'), SECRET_MODE);
  if (input.trustBundlePem) await put(BUNDLE_FILES.trustBundle, input.trustBundlePem, PUBLIC_MODE);
  else await drop(BUNDLE_FILES.trustBundle);
  if (input.edgeCa) {
    await put(BUNDLE_FILES.edgeCaCert, input.edgeCa.chainPem, PUBLIC_MODE);
    await put(BUNDLE_FILES.edgeCaKey, input.edgeCa.keyPem, SECRET_MODE);
  } else {
    await drop(BUNDLE_FILES.edgeCaCert);
    await drop(BUNDLE_FILES.edgeCaKey);
  }
  if (gateway.mcus.length > 0) await put(BUNDLE_FILES.mcuKeys, `${JSON.stringify(input.mcuKeys, null, 2)}\n`, SECRET_MODE);
  else await drop(BUNDLE_FILES.mcuKeys);

  let firstBoot: { file: string; sha256: string; bytes: number; installAs: string; updateId?: string; expiresDateTime?: string; verified: boolean } | undefined;
  if (gateway.firstBootBundle) {
    const file = path.join(dir, BUNDLE_FILES.firstBoot);
    const copied = await copyFileChecked(gateway.firstBootBundle, file, gateway.firstBootBundleSha256 ?? input.firstBootInfo?.sha256);
    results.push({ file, action: copied.action });
    firstBoot = {
      file: BUNDLE_FILES.firstBoot, sha256: copied.sha256, bytes: copied.bytes, installAs: `${INSTALL_PATHS.usbDropIn}/${BUNDLE_FILES.firstBoot}`,
      ...(input.firstBootInfo ? { updateId: input.firstBootInfo.updateId, ...(input.firstBootInfo.expiresDateTime ? { expiresDateTime: input.firstBootInfo.expiresDateTime } : {}), verified: true } : { verified: false }),
    };
  } else {
    await drop(BUNDLE_FILES.firstBoot);
  }

  const summary = {
    id: gateway.id,
    layer: gateway.layer,
    parent: gateway.parent ?? null,
    hostname: gateway.hostname,
    parentHostname: parent?.hostname ?? null,
    iothubHostname: input.iothubHostName,
    software: gateway.software ?? null,
    firstBootBundle: firstBoot ?? null,
    mcus: gateway.mcus.map((m) => ({ id: m.id, port: m.port, firmware: m.firmware ?? null, ...(m.baudRate ? { baudRate: m.baudRate } : {}) })),
    // The serial translator's SERIAL_MCUS (or its module twin's desired `mcus`), ready to paste.
    serialMcus: Object.fromEntries(gateway.mcus.map((m) => [m.id, { port: m.port, ...(m.baudRate ? { baudRate: m.baudRate } : {}) }])),
    install: {
      [BUNDLE_FILES.config]: INSTALL_PATHS.config,
      [BUNDLE_FILES.deviceKey]: INSTALL_PATHS.deviceKey,
      ...(input.trustBundlePem ? { [BUNDLE_FILES.trustBundle]: INSTALL_PATHS.trustBundle } : {}),
      ...(input.edgeCa ? { [BUNDLE_FILES.edgeCaCert]: INSTALL_PATHS.edgeCaCert, [BUNDLE_FILES.edgeCaKey]: INSTALL_PATHS.edgeCaKey } : {}),
      ...(gateway.mcus.length > 0 ? { [BUNDLE_FILES.mcuKeys]: 'the serialTranslator volume: /var/lib/edge-ota/serial-translator/mcu-keys.json' } : {}),
      ...(firstBoot ? { [BUNDLE_FILES.firstBoot]: firstBoot.installAs } : {}),
    },
  };
  await put(BUNDLE_FILES.summary, `${JSON.stringify(summary, null, 2)}\n`, PUBLIC_MODE);
  return results;
}
