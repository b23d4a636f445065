import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { SigningKey, TrustStore } from '@edge-ota/common';
import { ArtifactDownloads } from './artifactDownloads.ts';
import { LocalArtifactStore } from './artifactStore.ts';
import { Catalog } from './catalog.ts';
import { DeploymentPlanner } from './deploymentPlanner.ts';
import { createRequestHandler } from './deviceManagerApi.ts';
import { DispatchQueue } from './dispatchQueue.ts';
import { EventGridAdapter } from './eventGridAdapter.ts';
import { EventHubsAdapter } from './eventHubsAdapter.ts';
import { EventIngestion } from './eventIngestion.ts';
import { FeedbackIngestor } from './feedbackIngestor.ts';
import type { IdentityHub } from './hubClient.ts';
import { ServiceHub } from './hubClient.ts';
import { ManifestBuilder } from './manifestBuilder.ts';
import { SqliteStore } from './sqliteStore.ts';
import { StatusViews } from './statusViews.ts';
import type { DeliveryRecord, DispatcherStore } from './store.ts';

// Builds the dispatcher from options; `main.ts` only reads the command line, key files and hub.json.

export interface DispatcherOptions {
  /** The IoT Hub service connection string (iothubowner or a policy with registry write + service connect). */
  hubConnectionString: string;
  /** The built-in endpoint's Event Hubs-compatible connection string; without it only the Event Grid webhook ingests. */
  eventHubsConnectionString?: string;
  consumerGroup?: string;
  dataDir: string;
  signingKey: SigningKey;
  /** Roots that offline bundles must be signed under to enter the catalog. */
  trustStore: TrustStore;
  port?: number;
  host?: string;
  /** Base URL devices download from; defaults to http://<host>:<port>. */
  publicUrl?: string;
  dispatch?: { concurrency?: number; initialBackoffMs?: number; maxBackoffMs?: number; methodTimeoutSeconds?: number };
  manifestLifetimeMs?: number;
  urlLifetimeMs?: number;
  log?: (line: string) => void;
  onDelivered?: (delivery: DeliveryRecord) => void;
  /** How long start-up waits for the Event Hubs consumer to read every partition (default 10 s). */
  eventHubsReadyTimeoutMs?: number;
  /** Tests may pass another store implementation or hub. */
  store?: DispatcherStore;
  hub?: IdentityHub;
}

export interface Dispatcher {
  readonly url: string;
  readonly store: DispatcherStore;
  readonly ingestion: EventIngestion;
  readonly queue: DispatchQueue;
  readonly eventHubs: EventHubsAdapter | undefined;
  close(): Promise<void>;
}

export async function createDispatcher(options: DispatcherOptions): Promise<Dispatcher> {
  const log = options.log ?? (() => undefined);
  mkdirSync(options.dataDir, { recursive: true });
  const store = options.store ?? new SqliteStore(path.join(options.dataDir, 'dispatcher.sqlite'));
  const hub = options.hub ?? new ServiceHub(options.hubConnectionString);
  const artifacts = new LocalArtifactStore(path.join(options.dataDir, 'artifacts'));
  const catalog = new Catalog(store, artifacts, options.trustStore);
  const builder = new ManifestBuilder({
    signingKey: options.signingKey, artifacts,
    ...(options.manifestLifetimeMs ? { manifestLifetimeMs: options.manifestLifetimeMs } : {}),
    ...(options.urlLifetimeMs ? { urlLifetimeMs: options.urlLifetimeMs } : {}),
  });
  const urlLifetimeMs = options.urlLifetimeMs ?? 30 * 24 * 3600_000;
  const queue = new DispatchQueue({
    store, hub, log, ...options.dispatch, ...(options.onDelivered ? { onDelivered: options.onDelivered } : {}),
    refreshUrls: (urls) => {
      const expiresAt = new Date(Date.now() + urlLifetimeMs);
      return Object.fromEntries(Object.entries(urls).map(([fileId, url]) => [fileId, artifacts.reissueUrl(url, expiresAt) ?? url]));
    },
  });
  const planner = new DeploymentPlanner(store, catalog, builder, queue);
  const ingestion = new EventIngestion({ store, planner, feedback: new FeedbackIngestor(store), queue, log });
  const views = new StatusViews(store, planner);
  const eventGrid = new EventGridAdapter(ingestion);

  const server: Server = createServer(createRequestHandler({
    store, hub, catalog, planner, views, ingestion, eventGrid, artifacts, downloads: new ArtifactDownloads(), log, maxJsonBytes: 128 * 1024 * 1024, maxBundleBytes: 1024 * 1024 * 1024,
  }));
  server.keepAliveTimeout = 5_000;
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  artifacts.setBaseUrl(options.publicUrl ?? url);

  // Deliveries recorded before a restart continue first; then new events flow in.
  queue.start();
  let eventHubs: EventHubsAdapter | undefined;
  if (options.eventHubsConnectionString) {
    eventHubs = new EventHubsAdapter({
      connectionString: options.eventHubsConnectionString, store, ingestion, log, ...(options.consumerGroup ? { consumerGroup: options.consumerGroup } : {}),
    });
    eventHubs.start();
    // Ready means ingesting: the consumer has every partition's receiver up. Without this wait the first create
    // events waited ~0.6 s for the consumer to claim partitions and attach links (the dispatch bench's slow start).
    if (!(await eventHubs.ready(options.eventHubsReadyTimeoutMs ?? 10_000))) log('event hubs: not every partition is being read yet; continuing (events are kept by the hub)');
  }

  return {
    url,
    store,
    ingestion,
    queue,
    eventHubs,
    async close() {
      // The consumer's close can wait on a link the hub no longer answers; the checkpoint is already stored.
      await Promise.race([eventHubs?.stop().catch((error: unknown) => log(`event hubs stop: ${(error as Error).message}`)), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
      await queue.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await hub.close();
      if (!options.store) store.close();
    },
  };
}
