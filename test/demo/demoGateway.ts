import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LocalEdge, LocalHubInfo } from '../../deployment/src/localRunner.ts';
import { startLocalEdge } from '../../deployment/src/localRunner.ts';
import { generateManifest } from '../../deployment/src/manifestCheck.ts';
import { freePort } from '../support/freePort.ts';

// One gateway of the demo, run by the local runner from the deployment manifest we ship (the child from the
// nested variant), with only what differs on one machine set on top: free ports instead of 8080, the parent's
// cache on loopback instead of behind the parent's API proxy on 443, and the demo's trust roots and devices.

export interface McuOnGateway {
  deviceId: string;
  /** The host end of the MCU's serial line. */
  port: string;
  publicKeyPem: string;
}

export interface DemoGatewayOptions {
  hubInfo: LocalHubInfo;
  deviceId: string;
  stateDir: string;
  /** The root public key file the orchestrator trusts (the dispatcher's). */
  trustRootsFile: string;
  deviceProperties: Record<string, string>;
  /** A child gateway: its parent's host name and cache port. */
  parent?: { hostName: string; cachePort: number };
  mcus?: readonly McuOnGateway[];
  mcuProperties?: Record<string, string>;
  log: (line: string) => void;
}

export interface DemoGateway {
  readonly deviceId: string;
  readonly edge: LocalEdge;
  readonly cachePort: number;
  readonly cacheUrl: string;
  /** The orchestrator's state volume (its journal is jobs.sqlite there). */
  readonly orchestratorStateDir: string;
  /** Where the USB stick's mount point is on this machine. */
  readonly usbDir: string;
  /** The translator's MCU identity keys file, when the gateway has MCUs. */
  readonly mcuKeysFile: string | undefined;
  stop(): Promise<void>;
}

function required(edge: LocalEdge, moduleId: string, name: string): string {
  const value = edge.modules.get(moduleId)?.environment[name];
  if (!value) throw new Error(`${edge.deviceId}/${moduleId} has no ${name} in its environment`);
  return value;
}

/** The cache answers /healthz once it listens; the orchestrator would retry, but the demo's live view should not. */
async function cacheReady(edge: LocalEdge, cacheUrl: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!(await fetch(`${cacheUrl}/healthz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false))) {
    if (Date.now() > deadline) {
      await edge.stop();
      throw new Error(`${edge.deviceId}'s contentCache did not answer on ${cacheUrl} within 30 s: ${edge.modules.get('contentCache')?.output ?? ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export async function startDemoGateway(options: DemoGatewayOptions): Promise<DemoGateway> {
  const cachePort = await freePort();
  const cacheUrl = `http://127.0.0.1:${cachePort}`;
  const mcus = options.mcus ?? [];
  const manifest = generateManifest({ platform: 'amd64', registry: 'localhost:5000', nestedParent: options.parent !== undefined }).manifest;
  const translatorDir = path.join(options.stateDir, 'translator-keys');
  const mcuKeysFile = mcus.length > 0 ? path.join(translatorDir, 'mcu-keys.json') : undefined;
  if (mcuKeysFile) {
    mkdirSync(translatorDir, { recursive: true });
    // The MCU identities are created later, through the dispatcher; their keys are added when they exist.
    writeFileSync(mcuKeysFile, '{}\n', { mode: 0o600 });
  }
  const targets = Object.fromEntries(mcus.map((mcu) => [mcu.deviceId, { properties: options.mcuProperties ?? {} }]));
  const edge = await startLocalEdge({
    hubInfo: options.hubInfo,
    deviceId: options.deviceId,
    manifest,
    stateDir: options.stateDir,
    modules: mcus.length > 0 ? ['contentCache', 'otaOrchestrator', 'serialTranslator'] : ['contentCache', 'otaOrchestrator'],
    ...(options.parent ? { parentHostName: options.parent.hostName } : {}),
    envOverrides: {
      contentCache: {
        CACHE_PORT: String(cachePort),
        CACHE_BIND_ADDRESS: '127.0.0.1',
        ...(options.parent ? { CACHE_PARENT_PORT: String(options.parent.cachePort), CACHE_PARENT_TLS: '0', CACHE_UPSTREAM_CA_FILE: '' } : {}),
      },
      otaOrchestrator: {
        OTA_CONTENT_CACHE_URL: cacheUrl,
        OTA_TRUST_ROOTS_FILE: options.trustRootsFile,
        OTA_TRUST_ADU_SERVICE_ROOTS: '0',
        OTA_DEVICE_PROPERTIES: JSON.stringify(options.deviceProperties),
        OTA_TARGETS: JSON.stringify(targets),
      },
      serialTranslator: {
        SERIAL_CONTENT_CACHE_URL: cacheUrl,
        ...(mcuKeysFile ? { SERIAL_MCU_KEYS_FILE: mcuKeysFile } : {}),
        SERIAL_MCUS: JSON.stringify(Object.fromEntries(mcus.map((mcu) => [mcu.deviceId, { port: mcu.port, publicKey: mcu.publicKeyPem }]))),
      },
    },
    log: options.log,
  });
  await cacheReady(edge, cacheUrl);
  return {
    deviceId: options.deviceId,
    edge,
    cachePort,
    cacheUrl,
    orchestratorStateDir: required(edge, 'otaOrchestrator', 'OTA_STATE_DIR'),
    usbDir: required(edge, 'otaOrchestrator', 'OTA_USB_DIR'),
    mcuKeysFile,
    stop: () => edge.stop(),
  };
}
