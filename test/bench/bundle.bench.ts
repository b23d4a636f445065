// `npm run bench -- bundle [--size-mib N]`: verifies an offline bundle of N MiB (default 1024) with readBundle and
// compares its throughput with `openssl dgst -sha256` over the same file, in the same run. Peak memory is sampled
// while verifying, for the big bundle and for a 64 MiB one, to show it does not grow with the bundle's size.
import { execFileSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  TrustStore,
  createSigningKey,
  generateKeyPair,
  parseImportManifest,
  publicJwk,
  readBundle,
  signUpdateManifest,
  updateManifestFromImport,
  writeBundle,
} from '@edge-ota/common';

const MIB = 1024 * 1024;

async function writePayload(file: string, sizeMib: number): Promise<string> {
  // Content does not change hashing speed; one random block repeated keeps set-up fast.
  const block = randomFillSync(Buffer.alloc(16 * MIB));
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for (let written = 0; written < sizeMib * MIB; written += block.length) {
    const piece = block.subarray(0, Math.min(block.length, sizeMib * MIB - written));
    hash.update(piece);
    if (!out.write(piece)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'close');
  return hash.digest('base64');
}

async function makeBundle(dir: string, sizeMib: number, root: { kid: string; privateKey: ReturnType<typeof generateKeyPair>['privateKey'] }) {
  const payload = path.join(dir, `payload-${sizeMib}.bin`);
  const sha256 = await writePayload(payload, sizeMib);
  const imported = parseImportManifest({
    updateId: { provider: 'Contoso', name: 'Bench', version: '1.0' },
    compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Bench' }],
    instructions: { steps: [{ handler: 'microsoft/swupdate:1', files: ['payload.bin'] }] },
    files: [{ filename: 'payload.bin', sizeInBytes: sizeMib * MIB, hashes: { sha256 } }],
    manifestVersion: '5.0',
    createdDateTime: new Date().toISOString(),
  });
  const { bytes } = updateManifestFromImport(imported, { expiresDateTime: new Date(Date.now() + 3600_000) });
  const signingKey = createSigningKey({ kid: 'bench-signer', alg: 'ES256', rootKid: root.kid, rootPrivateKey: root.privateKey });
  const bundle = path.join(dir, `bench-${sizeMib}.otabundle`);
  await writeBundle({ manifest: bytes, signature: signUpdateManifest(bytes, signingKey), filePaths: { 'payload.bin': payload } }, bundle);
  // Only the bundle is measured; dropping the payload keeps the temp footprint at one copy.
  await rm(payload);
  return bundle;
}

function mibPerSecond(bytes: number, ns: bigint): number {
  return bytes / MIB / (Number(ns) / 1e9);
}

async function measureOurs(bundle: string, trustStore: TrustStore, bytes: number): Promise<{ mibPerS: number; peakRssMb: number }> {
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  const start = process.hrtime.bigint();
  await readBundle(bundle, { trustStore });
  const elapsed = process.hrtime.bigint() - start;
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  return { mibPerS: mibPerSecond(bytes, elapsed), peakRssMb: peak / 1e6 };
}

function measureOpenssl(bundle: string, bytes: number): number {
  const start = process.hrtime.bigint();
  execFileSync('openssl', ['dgst', '-sha256', bundle], { stdio: ['ignore', 'pipe', 'inherit'] });
  return mibPerSecond(bytes, process.hrtime.bigint() - start);
}

export async function main(args: string[]): Promise<void> {
  const sizeFlag = args.indexOf('--size-mib');
  const sizeMib = sizeFlag === -1 ? 1024 : Number(args[sizeFlag + 1]);
  if (!Number.isInteger(sizeMib) || sizeMib < 1 || sizeMib > 2047) throw new Error('--size-mib must be 1..2047');
  const rounds = 3;
  const dir = await mkdtemp(path.join(tmpdir(), 'edge-ota-bench-'));
  try {
    const { privateKey, publicKey } = generateKeyPair('RS256', 3072);
    const root = { kid: 'bench.root', privateKey };
    const trustStore = new TrustStore({ rootKeys: [{ kid: root.kid, jwk: publicJwk(publicKey) }], aduServiceRoots: false });

    const small = await makeBundle(dir, 64, root);
    const smallRun = await measureOurs(small, trustStore, (await stat(small)).size);
    await rm(small);

    process.stderr.write(`writing a ${sizeMib} MiB bundle in ${dir}\n`);
    const bundle = await makeBundle(dir, sizeMib, root);
    const bytes = (await stat(bundle)).size;
    // Alternate the two so page cache and CPU frequency treat them alike; keep each one's best round.
    let ours = 0;
    let openssl = 0;
    let peakRssMb = 0;
    for (let round = 1; round <= rounds; round += 1) {
      openssl = Math.max(openssl, measureOpenssl(bundle, bytes));
      const run = await measureOurs(bundle, trustStore, bytes);
      ours = Math.max(ours, run.mibPerS);
      peakRssMb = Math.max(peakRssMb, run.peakRssMb);
      process.stderr.write(`round ${round}: readBundle ${run.mibPerS.toFixed(0)} MiB/s, openssl best so far ${openssl.toFixed(0)} MiB/s\n`);
    }
    const figures = {
      bundle_mib: Math.round((bytes / MIB) * 100) / 100,
      rounds,
      ours_mib_per_s: Math.round(ours),
      openssl_mib_per_s: Math.round(openssl),
      ratio: Math.round((ours / openssl) * 1000) / 1000,
      peak_rss_mb: Math.round(peakRssMb),
      peak_rss_64mib_bundle_mb: Math.round(smallRun.peakRssMb),
    };
    process.stdout.write(`bundle verify (readBundle, best of ${rounds}): ${figures.ours_mib_per_s} MiB/s\n`);
    process.stdout.write(`openssl dgst -sha256 (best of ${rounds}):       ${figures.openssl_mib_per_s} MiB/s\n`);
    process.stdout.write(`ratio ours/openssl: ${figures.ratio}  (target >= 0.7)\n`);
    process.stdout.write(`peak RSS while verifying: ${figures.peak_rss_mb} MB for ${figures.bundle_mib} MiB, ${figures.peak_rss_64mib_bundle_mb} MB for 64 MiB\n`);
    process.stdout.write(`${JSON.stringify(figures)}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
