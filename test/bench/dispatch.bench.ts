// `npm run bench -- dispatch [--devices 2000] [--gateways 4] [--concurrency 32]`: creates devices through the
// dispatcher's API against the hub emulator (children of a few gateways whose otaOrchestrator is a stand-in
// module in bench mode), and measures the time from identity creation (the API's 201) to the manifest delivered
// (the orchestrator's applyUpdate accepted it), the same from the moment the create request was sent, the
// devices/s of the whole run, the events/s the dispatcher ingests (lifecycle + feedback through the Event Hubs
// consumer), and the peak RSS of the process running the dispatcher.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadOrCreateCertificateAuthority } from '@edge-ota/hub-emulator';
import { createDispatcher } from '../../cloud/dispatcher/src/app.ts';
import { api, makeUpdate, startHarness } from '../../cloud/dispatcher/test/support/harness.ts';

function option(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const value = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} needs a positive integer`);
  return value;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

/**
 * The bench's own HTTP client: plain node:http with keep-alive. It runs in the dispatcher's process, so what it
 * costs is taken from the dispatcher; fetch (undici, web streams) cost about twice as much CPU per request here.
 * The agent's timeout lets it honour the server's Keep-Alive hint instead of reusing a socket the server closes.
 */
function jsonClient(base: string, maxSockets: number): (method: string, route: string, body: unknown) => Promise<{ status: number; body: Record<string, unknown> }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets, timeout: 60_000 });
  const { hostname, port } = new URL(base);
  return (method, route, body) => new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const request = http.request({ hostname, port, path: route, method, agent, headers: { 'content-type': 'application/json', 'content-length': payload.length } }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', reject);
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(text) as Record<string, unknown>;
        } catch {
          parsed = { raw: text };
        }
        resolve({ status: response.statusCode ?? 0, body: parsed });
      });
    });
    request.on('error', reject);
    request.end(payload);
  });
}

async function until(check: () => boolean, timeoutMs: number, what: string, explain: () => string = () => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${explain()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export async function main(args: string[]): Promise<void> {
  // The service SDK trusts the emulator only through NODE_EXTRA_CA_CERTS, read at process start: make the CA,
  // then run the measurement in a child process that has it.
  if (!process.env.EDGE_OTA_BENCH_CHILD) {
    const caDir = mkdtempSync(path.join(tmpdir(), 'dispatch-bench-ca-'));
    try {
      const ca = await loadOrCreateCertificateAuthority(caDir);
      const runner = fileURLToPath(new URL('./run.ts', import.meta.url));
      const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', runner, 'dispatch', ...args], {
        env: { ...process.env, EDGE_OTA_BENCH_CHILD: '1', NODE_EXTRA_CA_CERTS: ca.certFile, EDGE_OTA_TEST_CA_DIR: caDir },
        stdio: 'inherit',
      });
      const code = await new Promise<number>((resolve) => child.once('exit', (c) => resolve(c ?? 1)));
      if (code !== 0) process.exitCode = code;
    } finally {
      rmSync(caDir, { recursive: true, force: true });
    }
    return;
  }

  const deviceCount = option(args, 'devices', 2000);
  const gatewayCount = option(args, 'gateways', 4);
  const concurrency = option(args, 'concurrency', 32);
  const harness = await startHarness();
  const created = new Map<string, number>();
  const requestedAt = new Map<string, number>();
  const delivered = new Map<string, number>();
  let dispatcher: Awaited<ReturnType<typeof createDispatcher>> | undefined;
  let peakRss = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 50);
  try {
    const gateways = Array.from({ length: gatewayCount }, (_, i) => `bench-gw-${i}`);
    for (const gatewayId of gateways) {
      await harness.createGateway(gatewayId);
      await harness.startOrchestrator(gatewayId, { STAND_IN_BENCH: '1' });
    }
    dispatcher = await createDispatcher({
      hubConnectionString: harness.info.serviceConnectionString,
      eventHubsConnectionString: harness.info.eventHubsConnectionString,
      dataDir: path.join(harness.dir, 'dispatcher'),
      signingKey: harness.keys.signingKey,
      trustStore: harness.keys.trustStore,
      dispatch: { concurrency: 64 },
      onDelivered: (delivery) => delivered.set(delivery.deviceId, performance.now()),
    });
    const { url } = dispatcher;
    // Where the time between the API's 201 and the delivery goes: the hub's enqueued time of each create event,
    // when the dispatcher's ingestion took it up and when it was done with it (job planned, signed, recorded).
    const lifecycle = new Map<string, { enqueued: number; received: number; ingested: number }>();
    const ingestion = dispatcher.ingestion;
    const ingest = ingestion.ingest.bind(ingestion);
    ingestion.ingest = async (event) => {
      const received = performance.now();
      const result = await ingest(event);
      if (event.kind === 'lifecycle' && event.opType === 'createDeviceIdentity' && event.deviceId.startsWith('bench-dev-')) {
        lifecycle.set(event.deviceId, { enqueued: Date.parse(event.enqueuedTime) - Date.now() + performance.now(), received, ingested: performance.now() });
      }
      return result;
    };
    const imported = await api(url, 'POST', '/updates', makeUpdate('1.0.0', 2, 4096));
    if (imported.status !== 201) throw new Error(`import failed: ${JSON.stringify(imported.body)}`);
    const baseline = { ...dispatcher.ingestion.counters };
    const ingestedSoFar = (): number => {
      const c = dispatcher!.ingestion.counters;
      return c.applied + c.duplicate + c.stale + c.ignored - (baseline.applied + baseline.duplicate + baseline.stale + baseline.ignored);
    };

    const request = jsonClient(url, concurrency);
    const start = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < deviceCount) {
        const i = next++;
        const deviceId = `bench-dev-${i}`;
        const requested = performance.now();
        const response = await request('POST', '/devices', { deviceId, parentId: gateways[i % gatewayCount], updateId: 'Contoso/Sensor@1.0.0' });
        if (response.status !== 201) throw new Error(`create ${deviceId}: ${response.status} ${JSON.stringify(response.body)}`);
        // The identity exists once the API answered 201 (it registered it in IoT Hub before answering).
        created.set(deviceId, performance.now());
        requestedAt.set(deviceId, requested);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const createdAll = performance.now();
    // When it does not finish, say where the missing devices are stuck instead of only that it timed out.
    const explain = (): string => {
      const missing = [...created.keys()].filter((id) => !delivered.has(id));
      const sample = missing.slice(0, 5).map((id) => {
        const device = dispatcher!.store.getDevice(id);
        const deliveries = dispatcher!.store.deliveriesFor(id).map((d) => `${d.state} attempts=${d.attempts} lastError=${d.lastError ?? '-'}`);
        return `${id}: lifecycle=${device?.lifecycle ?? 'unknown'} ${deliveries.join('; ') || 'no delivery'}`;
      });
      return `: ${delivered.size} delivered, ${missing.length} missing; ingestion ${JSON.stringify(dispatcher!.ingestion.counters)}; e.g. ${sample.join(' | ')}`;
    };
    await until(() => delivered.size >= deviceCount, 300_000, `${deviceCount} deliveries`, explain);
    const deliveredAll = Math.max(...delivered.values());
    // Each device: one lifecycle event and two feedback messages (job started, job succeeded), plus the
    // gateways' own events; wait for the feedback of every device.
    await until(() => dispatcher!.store.countsByUpdate().find((r) => r.state === 'succeeded')?.count === deviceCount, 300_000, 'every job succeeded',
      () => `: ${JSON.stringify(dispatcher!.store.countsByUpdate())}; ingestion ${JSON.stringify(dispatcher!.ingestion.counters)}`);
    const ingestedAll = performance.now();
    const events = ingestedSoFar();

    const latencies = [...delivered].map(([id, at]) => at - created.get(id)!).sort((a, b) => a - b);
    const stage = (f: (id: string) => number): string => {
      const values = [...lifecycle.keys()].map(f).sort((a, b) => a - b);
      return `p50 ${percentile(values, 50).toFixed(0)} / p95 ${percentile(values, 95).toFixed(0)} ms`;
    };
    const breakdown = [
      `request sent -> API 201 (registry create) ${stage((id) => created.get(id)! - requestedAt.get(id)!)}`,
      `API 201 -> create event taken up by ingestion ${stage((id) => lifecycle.get(id)!.received - created.get(id)!)}`,
      `(of which hub enqueued -> taken up ${stage((id) => lifecycle.get(id)!.received - lifecycle.get(id)!.enqueued)})`,
      `ingestion of the event (plan, sign, record) ${stage((id) => lifecycle.get(id)!.ingested - lifecycle.get(id)!.received)}`,
      `recorded -> applyUpdate accepted ${stage((id) => (delivered.get(id) ?? Number.NaN) - lifecycle.get(id)!.ingested)}`,
    ];
    const endToEnd = [...delivered].map(([id, at]) => at - requestedAt.get(id)!).sort((a, b) => a - b);
    const seconds = (deliveredAll - start) / 1000;
    const figures = {
      devices: deviceCount,
      gateways: gatewayCount,
      api_concurrency: concurrency,
      create_s: Number(((createdAll - start) / 1000).toFixed(2)),
      devices_per_s: Number((deviceCount / seconds).toFixed(1)),
      p50_ms: Number(percentile(latencies, 50).toFixed(1)),
      p95_ms: Number(percentile(latencies, 95).toFixed(1)),
      max_ms: Number(latencies[latencies.length - 1]!.toFixed(1)),
      request_p50_ms: Number(percentile(endToEnd, 50).toFixed(1)),
      request_p95_ms: Number(percentile(endToEnd, 95).toFixed(1)),
      events: events,
      events_per_s: Number((events / ((ingestedAll - start) / 1000)).toFixed(1)),
      all_succeeded_s: Number(((ingestedAll - start) / 1000).toFixed(2)),
      peak_rss_mb: Number((Math.max(peakRss, process.resourceUsage().maxRSS * 1024) / (1024 * 1024)).toFixed(1)),
    };
    process.stdout.write(`created ${deviceCount} devices under ${gatewayCount} gateways in ${figures.create_s} s; all delivered after ${seconds.toFixed(2)} s; all succeeded after ${figures.all_succeeded_s} s\n`);
    process.stdout.write(`identity created (API 201) -> manifest delivered: p50 ${figures.p50_ms} ms, p95 ${figures.p95_ms} ms, max ${figures.max_ms} ms\n`);
    process.stdout.write(`create request sent -> manifest delivered: p50 ${figures.request_p50_ms} ms, p95 ${figures.request_p95_ms} ms\n`);
    process.stdout.write(`breakdown:\n  ${breakdown.join('\n  ')}\n`);
    // The same latency by order of creation (tenths of the run): shows whether the tail is start-up or backlog.
    const order = [...created.keys()].sort((a, b) => created.get(a)! - created.get(b)!);
    const tenths = Array.from({ length: 10 }, (_, t) => {
      const slice = order.slice(Math.floor((t * order.length) / 10), Math.floor(((t + 1) * order.length) / 10))
        .map((id) => delivered.get(id)! - created.get(id)!).sort((a, b) => a - b);
      return `${percentile(slice, 50).toFixed(0)}/${percentile(slice, 95).toFixed(0)}`;
    });
    process.stdout.write(`identity created -> delivered p50/p95 ms per tenth of the devices in creation order: ${tenths.join(' ')}\n`);
    const first = order.slice(0, Math.floor(order.length / 10)).filter((id) => lifecycle.has(id));
    const firstStage = (f: (id: string) => number): string => {
      const values = first.map(f).sort((a, b) => a - b);
      return `${percentile(values, 50).toFixed(0)}/${percentile(values, 95).toFixed(0)}`;
    };
    process.stdout.write(`first tenth p50/p95 ms: 201 -> taken up ${firstStage((id) => lifecycle.get(id)!.received - created.get(id)!)}, recorded -> accepted ${firstStage((id) => delivered.get(id)! - lifecycle.get(id)!.ingested)}\n`);
    // A delivery that needed more than one attempt waited out a backoff (and wrote the twin): say how many did.
    const attempts = new Map<number, number>();
    let twins = 0;
    const errors = new Map<string, number>();
    for (const id of created.keys()) {
      for (const d of dispatcher.store.deliveriesFor(id)) {
        attempts.set(d.attempts, (attempts.get(d.attempts) ?? 0) + 1);
        if (d.twinWritten) twins += 1;
        if (d.attempts > 1 && d.lastError) errors.set(d.lastError.slice(0, 80), (errors.get(d.lastError.slice(0, 80)) ?? 0) + 1);
      }
    }
    process.stdout.write(`deliveries by attempts ${JSON.stringify(Object.fromEntries([...attempts].sort((a, b) => a[0] - b[0])))}, twin written ${twins}${errors.size ? `, errors ${JSON.stringify(Object.fromEntries(errors))}` : ''}\n`);
    process.stdout.write(`peak RSS of the process running the dispatcher (and this bench's HTTP client): ${figures.peak_rss_mb} MB\n`);
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } finally {
    clearInterval(sampler);
    await dispatcher?.close();
    await harness.stop();
  }
}
