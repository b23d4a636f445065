// `npm run bench -- dispatch [--devices 2000] [--gateways 4] [--concurrency 32]`: creates devices through the
// dispatcher's API against the hub emulator (children of a few gateways whose otaOrchestrator is a stand-in
// module in bench mode), and measures the time from identity creation (the API's 201) to the manifest delivered
// (the orchestrator's applyUpdate accepted it), the same from the moment the create request was sent, the
// devices/s of the whole run, the events/s the dispatcher ingests (lifecycle + feedback through the Event Hubs
// consumer), and the peak RSS of the process running the dispatcher.
import { spawn } from 'node:child_process';
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

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
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
    const imported = await api(url, 'POST', '/updates', makeUpdate('1.0.0', 2, 4096));
    if (imported.status !== 201) throw new Error(`import failed: ${JSON.stringify(imported.body)}`);
    const baseline = { ...dispatcher.ingestion.counters };
    const ingestedSoFar = (): number => {
      const c = dispatcher!.ingestion.counters;
      return c.applied + c.duplicate + c.stale + c.ignored - (baseline.applied + baseline.duplicate + baseline.stale + baseline.ignored);
    };

    const start = performance.now();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < deviceCount) {
        const i = next++;
        const deviceId = `bench-dev-${i}`;
        const requested = performance.now();
        const response = await api(url, 'POST', '/devices', { deviceId, parentId: gateways[i % gatewayCount], updateId: 'Contoso/Sensor@1.0.0' });
        if (response.status !== 201) throw new Error(`create ${deviceId}: ${response.status} ${JSON.stringify(response.body)}`);
        // The identity exists once the API answered 201 (it registered it in IoT Hub before answering).
        created.set(deviceId, performance.now());
        requestedAt.set(deviceId, requested);
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const createdAll = performance.now();
    await until(() => delivered.size >= deviceCount, 600_000, `${deviceCount} deliveries`);
    const deliveredAll = Math.max(...delivered.values());
    // Each device: one lifecycle event and two feedback messages (job started, job succeeded), plus the
    // gateways' own events; wait for the feedback of every device.
    await until(() => dispatcher!.store.countsByUpdate().find((r) => r.state === 'succeeded')?.count === deviceCount, 600_000, 'every job succeeded');
    const ingestedAll = performance.now();
    const events = ingestedSoFar();

    const latencies = [...delivered].map(([id, at]) => at - created.get(id)!).sort((a, b) => a - b);
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
    process.stdout.write(`peak RSS of the process running the dispatcher (and this bench's HTTP client): ${figures.peak_rss_mb} MB\n`);
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } finally {
    clearInterval(sampler);
    await dispatcher?.close();
    await harness.stop();
  }
}
