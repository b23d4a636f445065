import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// `npm run bench -- download [--mib 1024] [--rounds 3]`: a real update job downloads and verifies a large file
// from a local HTTP server (the orchestrator's download step, in its own process so its peak RSS is its own),
// next to `curl` fetching the same file from the same server to disk, rounds alternating. Figures are the best
// round of each, plus the median of the per-round ratios; the target is at least 0.7x curl with a peak RSS under
// 150 MB. Every transfer starts after a `sync`, so none pays for writing back the dirty pages of what ran before it
// (the 1 GiB source file, above all). curl's file is not made durable; the engine's is (it fsyncs before verifying).

const worker = fileURLToPath(new URL('./downloadWorker.ts', import.meta.url));

export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { mib: { type: 'string', default: '1024' }, rounds: { type: 'string', default: '3' } } });
  const mib = Number(values.mib);
  const rounds = Number(values.rounds);
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-download-'));
  try {
    const file = path.join(dir, 'big.bin');
    process.stderr.write(`writing a ${mib} MiB file...\n`);
    const sha256 = await writeRandomFile(file, mib);
    const size = statSync(file).size;
    const server = createServer((req, res) => {
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      const start = range ? Number(range[1]) : 0;
      res.writeHead(range ? 206 : 200, {
        'content-length': size - start,
        ...(range ? { 'content-range': `bytes ${start}-${size - 1}/${size}` } : {}),
      });
      createReadStream(file, { start, highWaterMark: 1024 * 1024 }).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/big.bin`;
    const curlSeconds: number[] = [];
    const ours: Array<{ downloadSeconds: number; totalSeconds: number; maxRssMb: number }> = [];
    try {
      for (let round = 1; round <= rounds; round += 1) {
        const target = path.join(dir, 'curl.bin');
        flushDirtyPages();
        const t0 = process.hrtime.bigint();
        // curl runs as its own process while this one keeps serving (a synchronous exec would block the server).
        await runCurl(target, url);
        curlSeconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
        rmSync(target, { force: true });
        flushDirtyPages();
        const workDir = mkdtempSync(path.join(dir, 'engine-round-'));
        const result = await runWorker(url, sha256, size, workDir);
        rmSync(workDir, { recursive: true, force: true });
        ours.push(result);
        process.stderr.write(`round ${round}: curl ${(mib / (curlSeconds.at(-1) ?? 1)).toFixed(0)} MiB/s, ours ${(mib / result.downloadSeconds).toFixed(0)} MiB/s, peak RSS ${result.maxRssMb.toFixed(0)} MB\n`);
      }
    } finally {
      server.close();
      server.closeAllConnections();
    }
    const oursMibPerS = mib / Math.min(...ours.map((r) => r.downloadSeconds));
    const curlMibPerS = mib / Math.min(...curlSeconds);
    const peakRssMb = Math.max(...ours.map((r) => r.maxRssMb));
    const roundRatios = ours.map((r, i) => (curlSeconds[i] ?? Number.NaN) / r.downloadSeconds).sort((a, b) => a - b);
    const medianRatio = roundRatios[Math.floor((roundRatios.length - 1) / 2)] ?? Number.NaN;
    process.stdout.write(`download + verify ${mib} MiB: ours ${oursMibPerS.toFixed(0)} MiB/s, curl ${curlMibPerS.toFixed(0)} MiB/s, peak RSS ${peakRssMb.toFixed(0)} MB\n`);
    process.stdout.write(`${JSON.stringify({
      file_mib: mib,
      rounds,
      ours_mib_per_s: Math.round(oursMibPerS),
      curl_mib_per_s: Math.round(curlMibPerS),
      ratio: Number((oursMibPerS / curlMibPerS).toFixed(2)),
      median_round_ratio: Number(medianRatio.toFixed(2)),
      peak_rss_mb: Math.round(peakRssMb),
    })}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function writeRandomFile(file: string, mib: number): Promise<string> {
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  // One random MiB repeated with a changing prefix: cheap to produce, no two MiB alike.
  const block = randomBytes(1024 * 1024);
  for (let i = 0; i < mib; i += 1) {
    block.writeUInt32BE(i, 0);
    hash.update(block);
    if (!out.write(block)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
  await new Promise<void>((resolve, reject) => {
    out.on('error', reject);
    out.end(() => resolve());
  });
  return hash.digest('base64');
}

/** `sync`: the next transfer starts with nothing of the last one (or of the source file) left to write back. */
function flushDirtyPages(): void {
  const result = spawnSync('sync');
  if (result.status !== 0) throw new Error(`sync failed: ${result.error?.message ?? `exit ${String(result.status)}`}`);
}

function runCurl(target: string, url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['--silent', '--show-error', '--fail', '--output', target, url], { stdio: ['ignore', 'ignore', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`curl exited with ${code ?? 'a signal'}`))));
  });
}

function runWorker(url: string, sha256: string, size: number, dir: string): Promise<{ downloadSeconds: number; totalSeconds: number; maxRssMb: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=source', worker, url, sha256, String(size), dir], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.on('exit', (code) => {
      if (code !== 0) reject(new Error(`download worker exited with ${code ?? 'a signal'}`));
      else resolve(JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { downloadSeconds: number; totalSeconds: number; maxRssMb: number });
    });
  });
}
