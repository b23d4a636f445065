// `npm run bench -- cache [--mib 256] [--clients 8] [--rounds 5]`: the content cache's hit path against nginx
// serving the same file over loopback to the same curl clients, plus the miss path through one and three layers.
import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, writeFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createContentCache } from '@edge-ota/content-cache';
import type { ContentCache } from '@edge-ota/content-cache';

const NGINX = '/usr/sbin/nginx';

function option(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`);
  const value = i >= 0 ? Number(args[i + 1]) : fallback;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} needs a positive number`);
  return value;
}

function ensureNginx(): void {
  if (existsSync(NGINX)) return;
  // Debian's small build is all we need: static files with sendfile.
  process.stdout.write('nginx not found, installing nginx-light\n');
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'nginx-light'], { stdio: 'inherit' });
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listening on ${port}`);
}

async function writeRandomFile(file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const fh = await open(file, 'w');
  const step = 8 << 20;
  for (let done = 0; done < bytes; done += step) {
    const chunk = randomBytes(Math.min(step, bytes - done));
    hash.update(chunk);
    await fh.write(chunk);
  }
  await fh.close();
  return hash.digest('hex');
}

/** Starts nginx in the foreground with a config of our own; returns its port and a stopper. */
async function startNginx(dir: string, root: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const port = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  const temp = path.join(dir, 'nginx-temp');
  await mkdir(temp, { recursive: true });
  await writeFile(
    conf,
    `user root;
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path ${temp}/body;
  proxy_temp_path ${temp}/proxy;
  fastcgi_temp_path ${temp}/fastcgi;
  uwsgi_temp_path ${temp}/uwsgi;
  scgi_temp_path ${temp}/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${root};
  }
}
`,
  );
  const child = spawn(NGINX, ['-p', dir, '-c', conf], { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await waitForPort(port);
  return {
    port,
    stop: async () => {
      child.kill('SIGQUIT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** `clients` curl processes fetching url at once; returns MiB/s over the wall time of the whole batch. */
async function load(url: string, clients: number, expectBytes: number): Promise<{ mibPerS: number; seconds: number }> {
  const started = process.hrtime.bigint();
  const runs = Array.from(
    { length: clients },
    () =>
      new Promise<string>((resolve, reject) => {
        const c = spawn('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url], { stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        c.stdout.on('data', (d: Buffer) => (out += d.toString()));
        c.once('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`curl exited ${code} for ${url}`))));
      }),
  );
  const sizes = await Promise.all(runs);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (sizes.some((s) => s !== `200 ${expectBytes}`)) throw new Error(`short download from ${url}: ${sizes.join(',')}`);
  return { mibPerS: (clients * expectBytes) / (1 << 20) / seconds, seconds };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const round = (x: number) => Math.round(x * 10) / 10;

export async function main(args: string[]): Promise<void> {
  const mib = option(args, 'mib', 256);
  const clients = option(args, 'clients', 8);
  const rounds = option(args, 'rounds', 5);
  ensureNginx();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cache-bench-'));
  const caches: ContentCache[] = [];
  let nginx: { port: number; stop: () => Promise<void> } | undefined;
  try {
    const www = path.join(dir, 'www');
    await mkdir(www);
    const bytes = mib << 20;
    process.stdout.write(`writing ${mib} MiB test file\n`);
    const sha = await writeRandomFile(path.join(www, 'file.bin'), bytes);
    nginx = await startNginx(dir, www);
    const origin = `http://127.0.0.1:${nginx.port}/file.bin`;

    const cacheAt = async (name: string, parents: string[] = []) => {
      const stateDir = path.join(dir, name);
      const cache = createContentCache({ stateDir, bindAddress: '127.0.0.1', port: 0, parents, quotaBytes: 4 * bytes, minFreeBytes: 0 });
      caches.push(cache);
      await cache.listen();
      return cache;
    };

    // Hit path: the cache holds the object; both servers are warmed once so both read from the page cache.
    const hitCache = await cacheAt('hit');
    const warm = await hitCache.prefetch(sha, [origin], true);
    if (warm.status === 'failed') throw new Error(`prefetch failed: ${warm.error}`);
    const hitUrl = `${hitCache.url}/sha256/${sha}`;
    await load(origin, 1, bytes);
    await load(hitUrl, 1, bytes);
    const nginxRates: number[] = [];
    const cacheRates: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // Alternating keeps drift on a shared machine from favouring one side.
      const n = await load(origin, clients, bytes);
      const c = await load(hitUrl, clients, bytes);
      nginxRates.push(n.mibPerS);
      cacheRates.push(c.mibPerS);
      process.stdout.write(`round ${r + 1}: nginx ${round(n.mibPerS)} MiB/s, cache hit ${round(c.mibPerS)} MiB/s\n`);
    }
    const nginxMib = median(nginxRates);
    const cacheMib = median(cacheRates);
    // Each round's pair ran back to back, so the median of per-round ratios is the figure least
    // disturbed by other load on a shared machine.
    const ratio = median(cacheRates.map((c, i) => c / nginxRates[i]!));

    // Miss path: cold caches, all clients asking at once (one upstream fetch per layer). The three
    // layers share this process (and the machine's cores), where real gateways would each have their own.
    const oneLayer = await cacheAt('miss1');
    const miss1 = await load(`${oneLayer.url}/sha256/${sha}?origin=${encodeURIComponent(origin)}`, clients, bytes);
    process.stdout.write(`miss through 1 layer: ${round(miss1.mibPerS)} MiB/s to ${clients} clients (${round(miss1.seconds)} s)\n`);
    const top = await cacheAt('miss3-top');
    const mid = await cacheAt('miss3-mid', [top.url]);
    const leaf = await cacheAt('miss3-leaf', [mid.url]);
    const miss3 = await load(`${leaf.url}/sha256/${sha}?origin=${encodeURIComponent(origin)}`, clients, bytes);
    process.stdout.write(`miss through 3 layers: ${round(miss3.mibPerS)} MiB/s to ${clients} clients (${round(miss3.seconds)} s)\n`);
    const upstreamFetches = [top, mid, leaf].map((c) => c.metrics.counters.upstreamRequests);

    process.stdout.write(
      `${JSON.stringify({
        file_mib: mib,
        clients,
        rounds,
        cache_hit_mib_per_s: round(cacheMib),
        nginx_mib_per_s: round(nginxMib),
        ratio: Math.round(ratio * 1000) / 1000,
        miss_1_layer_mib_per_s: round(miss1.mibPerS),
        miss_3_layers_mib_per_s: round(miss3.mibPerS),
        miss_3_layers_upstream_fetches_per_layer: upstreamFetches,
        cpus: os.cpus().length,
      })}\n`,
    );
  } finally {
    for (const c of caches) await c.close().catch(() => undefined);
    await nginx?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
