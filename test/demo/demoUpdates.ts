import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ImportManifest, ImportStep, SigningKey } from '@edge-ota/common';
import { signUpdateManifest, updateManifestFromImport, writeBundle } from '@edge-ota/common';
import { buildMcubootImage } from '../../modules/serialTranslator/src/mcubootImageBuilder.ts';

// What the demo publishes: an application for the gateways (run by the orchestrator's process handler) and
// MCUboot firmware for the MCU (flashed by serialTranslator), as ADU import manifests with their files; and, for
// the offline part, a newer firmware as a signed .otabundle for the USB drop-in.

export const GATEWAY_PROPERTIES = { manufacturer: 'Contoso', model: 'EdgeGateway' } as const;
export const MCU_PROPERTIES = { manufacturer: 'Contoso', model: 'SensorMcu' } as const;
export const APP_NAME = 'gateway-app';

/** The application: a shell script that proves it runs by keeping a heartbeat file fresh, plus a data file. */
const APP_SCRIPT = `#!/bin/sh
# edge-ota demo gateway application: writes its pid once and a heartbeat every second (renamed into place, so a
# reader never sees a half-written file).
echo $$ > app.pid
while :; do date +%s > heartbeat.tmp && mv heartbeat.tmp heartbeat; sleep 1; done
`;

export interface ImportRequest {
  importManifest: ImportManifest;
  files: Record<string, string>;
}

export interface PublishedUpdate {
  updateId: string;
  version: string;
  request: ImportRequest;
  /** filename -> sha256 hex, to follow the bytes through the caches. */
  sha256: Record<string, string>;
}

function importManifest(name: string, version: string, compatibility: Record<string, string>, step: ImportStep, files: Record<string, Buffer>): ImportManifest {
  return {
    updateId: { provider: 'Contoso', name, version },
    compatibility: [compatibility],
    instructions: { steps: [step] },
    files: Object.entries(files).map(([filename, bytes]) => ({ filename, sizeInBytes: bytes.length, hashes: { sha256: createHash('sha256').update(bytes).digest('base64') } })),
    manifestVersion: '5.0',
    createdDateTime: new Date(Date.now() - 60_000).toISOString(),
  };
}

function published(name: string, version: string, manifest: ImportManifest, files: Record<string, Buffer>): PublishedUpdate {
  return {
    updateId: `Contoso/${name}@${version}`,
    version,
    request: { importManifest: manifest, files: Object.fromEntries(Object.entries(files).map(([f, b]) => [f, b.toString('base64')])) },
    sha256: Object.fromEntries(Object.entries(files).map(([f, b]) => [f, createHash('sha256').update(b).digest('hex')])),
  };
}

export function gatewayApplication(version: string, dataBytes: number): PublishedUpdate {
  const files = { 'gateway-app.sh': Buffer.from(APP_SCRIPT), 'gateway-app.dat': randomBytes(dataBytes) };
  const step = { handler: 'edge-ota/process:1', files: Object.keys(files), handlerProperties: { name: APP_NAME, command: ['./gateway-app.sh'], startTimeoutSeconds: 2 } };
  return published('GatewayApp', version, importManifest('GatewayApp', version, GATEWAY_PROPERTIES, step, files), files);
}

export interface FirmwareKeys {
  privateKey: KeyObject;
  /** PEM SPKI: what serialTranslator checks images against (`mcus.<id>.publicKey`). */
  publicKeyPem: string;
}

export function firmwareKeys(): FirmwareKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { privateKey, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

export function firmwareFileName(version: string): string {
  return `sensor-fw-${version}.signed.bin`;
}

export function firmwareImage(version: string, keys: FirmwareKeys, payloadBytes: number): Buffer {
  const payload = Buffer.alloc(payloadBytes);
  payload.write(`edge-ota demo sensor firmware ${version}\n`);
  return Buffer.from(buildMcubootImage({ payload, version, signingKey: keys.privateKey }));
}

function firmwareManifest(version: string, image: Buffer): { manifest: ImportManifest; files: Record<string, Buffer> } {
  const files = { [firmwareFileName(version)]: image };
  const step = { handler: 'edge-ota/mcu:1', files: Object.keys(files), handlerProperties: { version } };
  return { manifest: importManifest('SensorFirmware', version, MCU_PROPERTIES, step, files), files };
}

export function mcuFirmware(version: string, keys: FirmwareKeys, payloadBytes: number): PublishedUpdate {
  const { manifest, files } = firmwareManifest(version, firmwareImage(version, keys, payloadBytes));
  return published('SensorFirmware', version, manifest, files);
}

/** A signed offline bundle (the same signing key the dispatcher signs with) for the USB drop-in. */
export async function firmwareBundle(version: string, keys: FirmwareKeys, payloadBytes: number, signingKey: SigningKey, dir: string): Promise<{ file: string; updateId: string; bytes: number }> {
  const { manifest, files } = firmwareManifest(version, firmwareImage(version, keys, payloadBytes));
  const now = new Date();
  const { bytes } = updateManifestFromImport(manifest, {
    manifestId: `demo-sensor-fw-${version}`,
    createdDateTime: now,
    expiresDateTime: new Date(now.getTime() + 7 * 24 * 3600_000),
  });
  const filesDir = path.join(dir, 'bundle-files');
  mkdirSync(filesDir, { recursive: true });
  const filePaths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    filePaths[name] = path.join(filesDir, name);
    writeFileSync(filePaths[name], content);
  }
  const file = path.join(dir, `sensor-fw-${version}.otabundle`);
  const written = await writeBundle({ manifest: bytes, signature: signUpdateManifest(bytes, signingKey), filePaths }, file);
  return { file, updateId: `Contoso/SensorFirmware@${version}`, bytes: written.bytes };
}
