import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as HttpsServer } from 'node:https';
import { createServer as createTlsServer } from 'node:tls';
import type { Server as TlsServer } from 'node:tls';
import path from 'node:path';
import { BuiltInEndpoint } from './builtInEndpoint.ts';
import { issueServerCertificate, loadOrCreateCertificateAuthority } from './certificates.ts';
import { EventGridPublisher } from './eventGrid.ts';
import { EventHubsEndpoint } from './eventHubsEndpoint.ts';
import { IotHub } from './iotHub.ts';
import { MqttSession } from './mqttSession.ts';
import { RegistryStore } from './registryStore.ts';
import { createServiceApi } from './serviceApi.ts';
import type { ServicePolicy } from './serviceApi.ts';
import { WorkloadApi, workloadSocketPath } from './workloadApi.ts';

// Builds the emulator from options; `main.ts` only parses the command line and handles signals.

export interface HubEmulatorOptions {
  /** Where the registry, events, CA and workload sockets live; reused across restarts. */
  stateDir: string;
  /** Loopback address to listen on; also the hub's host name unless `hostName` is given. */
  address: string;
  hostName?: string;
  /** A CA directory shared by several emulators (tests); defaults to `<stateDir>/ca`. */
  caDir?: string;
  eventGridWebhooks?: ReadonlyArray<string>;
  /** The SDKs always use 443 (HTTPS) and 8883 (MQTT); other ports are for tools that can be told. */
  httpsPort?: number;
  mqttPort?: number;
  /** The Event Hubs-compatible endpoint (AMQP over TLS); the client defaults to 5671. */
  eventHubsPort?: number;
  log?: (line: string) => void;
}

/** What a client needs to reach the emulator; written to `<stateDir>/hub.json` by `main`. */
export interface HubInfo {
  hostName: string;
  hubName: string;
  serviceConnectionString: string;
  caFile: string;
  /** `unix://<stateDir>/workload/{deviceId}.sock`: replace `{deviceId}` (URI-encoded) with the edge device's id. */
  workloadUri: string;
  address: string;
  httpsPort: number;
  mqttPort: number;
  /** For `@azure/event-hubs` (`EventHubConsumerClient`): the built-in endpoint, as IoT Hub's portal shows it. */
  eventHubsConnectionString: string;
  eventHubsPort: number;
}

export interface HubEmulator {
  readonly hub: IotHub;
  readonly info: HubInfo;
  workloadUriFor(deviceId: string): string;
  stop(): Promise<void>;
}

function loadOrCreatePolicy(stateDir: string): ServicePolicy {
  const file = path.join(stateDir, 'policy.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as ServicePolicy;
  const policy: ServicePolicy = { keyName: 'iothubowner', primaryKey: randomBytes(32).toString('base64') };
  writeFileSync(file, JSON.stringify(policy, null, 2), { mode: 0o600 });
  return policy;
}

function isEdgeTwin(body: Buffer): boolean {
  try {
    return (JSON.parse(body.toString('utf8')) as { capabilities?: { iotEdge?: unknown } }).capabilities?.iotEdge === true;
  } catch {
    return true;
  }
}

function listen(server: HttpsServer | TlsServer, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function close(server: HttpsServer | TlsServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    if ('closeAllConnections' in server) server.closeAllConnections();
  });
}

export async function startHubEmulator(options: HubEmulatorOptions): Promise<HubEmulator> {
  const log = options.log ?? (() => undefined);
  const stateDir = path.resolve(options.stateDir);
  mkdirSync(stateDir, { recursive: true });
  const hostName = options.hostName ?? options.address;
  const hubName = 'emulator';
  const httpsPort = options.httpsPort ?? 443;
  const mqttPort = options.mqttPort ?? 8883;
  const eventHubsPort = options.eventHubsPort ?? 5671;

  const ca = await loadOrCreateCertificateAuthority(options.caDir ? path.resolve(options.caDir) : path.join(stateDir, 'ca'));
  const certificate = await issueServerCertificate(ca, [...new Set([hostName, options.address])], path.join(stateDir, 'tls'));
  const policy = loadOrCreatePolicy(stateDir);
  const store = new RegistryStore(path.join(stateDir, 'registry.sqlite'));
  const events = new BuiltInEndpoint(path.join(stateDir, 'events.sqlite'));
  const hub = new IotHub({ hostName, hubName, store, events, log });

  const socketDir = path.join(stateDir, 'workload');
  const workload = new WorkloadApi(store, socketDir, ca.certPem);
  await workload.sync();
  // Edge devices come and go through the registry; keep one workload socket per edge device.
  let syncing = Promise.resolve();
  const onEvent = (event: { source: string; moduleId: string | undefined; body: Buffer }): void => {
    if (event.source !== 'deviceLifecycleEvents' || event.moduleId) return;
    // Only edge devices have a socket; a sync lists the whole registry, so leaf devices (most of a fleet) skip it.
    if (!isEdgeTwin(event.body)) return;
    syncing = syncing.then(() => workload.sync()).catch((error: unknown) => log(`workload API: ${(error as Error).message}`));
  };
  events.on('event', onEvent);

  const eventGrid = new EventGridPublisher(events, {
    hubName,
    webhooks: options.eventGridWebhooks ?? [],
    deadLetterFile: path.join(stateDir, 'eventgrid-deadletter.jsonl'),
    log,
  });

  const tlsOptions = { cert: certificate.certPem + ca.certPem, key: certificate.keyPem };
  // Idle keep-alive connections stay open for 4 minutes, like the idle timeout in front of IoT Hub. The service SDK's
  // agents keep sockets alive with no idle timeout of their own, so with Node's 5 s default a request could pick
  // up a socket the server was closing at that moment and fail with "socket hang up".
  const https = createHttpsServer({ ...tlsOptions, requestTimeout: 320_000, keepAliveTimeout: 240_000, headersTimeout: 250_000 }, createServiceApi(hub, policy));
  const mqtt = createTlsServer(tlsOptions, (socket) => new MqttSession(socket, hub, log));
  mqtt.on('tlsClientError', () => undefined);
  https.on('tlsClientError', () => undefined);
  const eventHubs = new EventHubsEndpoint({
    events, hubName, hostName, address: options.address, port: eventHubsPort, policy, tls: tlsOptions, log,
  });
  try {
    await listen(https, httpsPort, options.address);
    await listen(mqtt, mqttPort, options.address);
    await eventHubs.start();
  } catch (error) {
    await close(https);
    await close(mqtt);
    await eventHubs.stop();
    await workload.close();
    store.close();
    events.close();
    throw error;
  }

  const info: HubInfo = {
    hostName,
    hubName,
    serviceConnectionString: `HostName=${hostName};SharedAccessKeyName=${policy.keyName};SharedAccessKey=${policy.primaryKey}`,
    caFile: ca.certFile,
    workloadUri: `unix://${socketDir}/{deviceId}.sock`,
    address: options.address,
    httpsPort,
    mqttPort,
    eventHubsConnectionString: eventHubs.connectionString,
    eventHubsPort,
  };

  return {
    hub,
    info,
    workloadUriFor: (deviceId) => `unix://${workloadSocketPath(socketDir, deviceId)}`,
    async stop() {
      events.off('event', onEvent);
      eventGrid.stop();
      hub.closeAll();
      await Promise.all([close(https), close(mqtt), eventHubs.stop()]);
      await syncing;
      await workload.close();
      store.close();
      events.close();
    },
  };
}
