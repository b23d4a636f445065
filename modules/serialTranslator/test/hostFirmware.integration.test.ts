// The flash flow against the C firmware sample built for the host, over a real socat pty pair.
import { generateKeyPairSync } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { SerialPortLink } from '../src/serialPortLink.ts';
import { FaultyLink } from '../src/faultyLink.ts';
import { SmpClient } from '../src/smpClient.ts';
import { readImageState } from '../src/imageGroup.ts';
import { echo } from '../src/osGroup.ts';
import { buildMcubootImage } from '../src/mcubootImageBuilder.ts';
import { FlashFlow } from '../src/flashFlow.ts';
import type { FlashProgress, FlashResult } from '../src/flashFlow.ts';
import type { ByteLink } from '../src/link.ts';
import { startHostDevice, stopAll } from './support/hostFirmware.ts';
import type { HostDevice } from './support/hostFirmware.ts';
import { HEALTH_FAIL_MARKER } from './support/simulatedDevice.ts';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const imageOf = (version: string, size: number, marker = ''): Uint8Array =>
  buildMcubootImage({
    payload: Buffer.concat([Buffer.from(marker), Buffer.alloc(size, `payload of ${version} `)]),
    version,
    signingKey: privateKey,
  });

const links: ByteLink[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const link of links.splice(0)) await link.close();
  await stopAll();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function device(options: Parameters<typeof startHostDevice>[0] = {}): Promise<{ dev: HostDevice; link: SerialPortLink }> {
  const dev = await startHostDevice(options);
  dirs.push(dev.dir);
  const link = await SerialPortLink.open({ path: dev.pty.hostPath, baudRate: 115200 });
  links.push(link);
  return { dev, link };
}

async function runningVersions(link: ByteLink): Promise<string[]> {
  const client = new SmpClient(link);
  try {
    return (await readImageState(client)).map((s) => `${s.slot}:${s.version}${s.active ? '*' : ''}${s.confirmed ? 'c' : ''}`);
  } finally {
    client.close();
  }
}

describe('flashing the host firmware sample over a pty', () => {
  it('confirms a good update, which survives a further reset', async () => {
    const { link } = await device();
    const flow = new FlashFlow({ mcuId: 'mcu-a', link, image: imageOf('1.1.0', 48 * 1024), publicKey });
    const progress: FlashProgress[] = [];
    flow.on('progress', (p) => progress.push(p));
    const result = await flow.run();
    expect(result).toMatchObject({ outcome: 'confirmed', version: '1.1.0' });
    expect(progress.filter((p) => p.phase === 'upload').length).toBeGreaterThanOrEqual(24);
    expect(await runningVersions(link)).toEqual(['0:1.1.0*c', '1:1.0.0']);
  });

  it('reverts an image that fails its health check and reports the version really running', async () => {
    const { link } = await device();
    const result = await new FlashFlow({ mcuId: 'mcu-a', link, image: imageOf('1.2.0', 16 * 1024, HEALTH_FAIL_MARKER), publicKey }).run();
    expect(result).toMatchObject({ outcome: 'rolledback', code: 'health-echo-failed', runningVersion: '1.0.0' });
    expect(await runningVersions(link)).toEqual(['0:1.0.0*c', '1:1.2.0']);
  });

  it('refuses a corrupted and a wrongly signed image before anything is uploaded', async () => {
    const { link } = await device();
    const corrupted = imageOf('1.3.0', 16 * 1024);
    corrupted[2000]! ^= 0x10;
    const stranger = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const foreign = buildMcubootImage({ payload: new Uint8Array(16 * 1024), version: '1.3.0', signingKey: stranger.privateKey, omitKeyHash: true });
    const results: FlashResult[] = [];
    for (const image of [corrupted, foreign]) results.push(await new FlashFlow({ mcuId: 'mcu-a', link, image, publicKey }).run());
    expect(results.map((r) => [r.outcome, r.code])).toEqual([
      ['refused', 'image-hash-mismatch'],
      ['refused', 'image-bad-signature'],
    ]);
    expect(await runningVersions(link)).toEqual(['0:1.0.0*c']);
  });

  it('resumes after the cable is pulled mid-upload', async () => {
    const { dev, link } = await device();
    const image = imageOf('1.4.0', 64 * 1024);
    const flow = new FlashFlow({ mcuId: 'mcu-a', link, image, publicKey });
    let pulled: Promise<void> | undefined;
    let maxBefore = 0;
    let minAfter = Infinity;
    flow.on('progress', (p) => {
      if (p.phase !== 'upload') return;
      if (!pulled && p.bytesSent > image.length / 3) {
        maxBefore = p.bytesSent;
        pulled = (async () => {
          await dev.pty.unplug();
          await new Promise((resolve) => setTimeout(resolve, 300));
          await dev.pty.plug();
        })();
      } else if (pulled) {
        minAfter = Math.min(minAfter, p.bytesSent);
      }
    });
    const result = await flow.run();
    await pulled;
    expect(result).toMatchObject({ outcome: 'confirmed', version: '1.4.0' });
    expect(link.reopenCount).toBeGreaterThan(0);
    // Continued from where the device was, not from zero.
    expect(minAfter).toBeGreaterThanOrEqual(maxBefore);
  });

  it('flashes through a line that corrupts 1 byte in 1,000 in each direction', async () => {
    const { link } = await device();
    const faulty = new FaultyLink(link, { seed: 1000, tx: { corrupt: 0.001 }, rx: { corrupt: 0.001 } });
    const flow = new FlashFlow({
      mcuId: 'mcu-a',
      link: faulty,
      image: imageOf('1.5.0', 32 * 1024),
      publicKey,
      client: { retries: 6, timeoutMs: 1000 },
      firstChunkTimeoutMs: 1500,
    });
    const result = await flow.run();
    expect(result).toMatchObject({ outcome: 'confirmed', version: '1.5.0' });
    expect(faulty.counts.corrupted).toBeGreaterThan(20);
  }, 90_000);

  it('answers errors in the form the request asked for: {rc} to SMP v1, {err} to v2', async () => {
    const { link } = await device();
    const v1 = new SmpClient(link, { smpVersion: 1 });
    const v2 = new SmpClient(link, { smpVersion: 2 });
    try {
      // Image erase (group 1, command 5) is not implemented by the sample.
      expect((await v1.requestRaw({ op: 'write', group: 1, command: 5, body: {} })).body).toEqual({ rc: 8 });
      expect((await v2.requestRaw({ op: 'write', group: 1, command: 5, body: {} })).body).toEqual({ err: { group: 1, rc: 8 } });
      // An echo too long for the reply buffer is refused with EMSGSIZE rather than left unanswered.
      await expect(v2.request({ op: 'write', group: 0, command: 0, body: { d: 'x'.repeat(1500) } })).rejects.toMatchObject({ rc: 7 });
      expect(await echo(v2, 'still fine')).toBe('still fine');
    } finally {
      v1.close();
      v2.close();
    }
  });

  it('survives a stream of line noise and broken frames, then still answers', async () => {
    const { dev, link } = await device();
    const { seededRandom } = await import('../src/faultyLink.ts');
    const random = seededRandom(7);
    const alphabet = Buffer.from('\x06\x09\x04\x14\nABCDEFabcdef0123456789+/=');
    for (let i = 0; i < 64; i++) {
      const noise = Uint8Array.from({ length: 512 }, () =>
        random() < 0.8 ? alphabet[Math.floor(random() * alphabet.length)]! : Math.floor(random() * 256),
      );
      await link.write(noise);
    }
    await link.write(Buffer.from('\n'));
    const client = new SmpClient(link, { retries: 5 });
    try {
      expect(await echo(client, 'alive')).toBe('alive');
    } finally {
      client.close();
    }
    expect(dev.firmware.exitCode).toBeNull();
  });

  it('waits out a slow slot erase on the first chunk while later chunks use short timeouts', async () => {
    const { link } = await device({ eraseMs: 1500 });
    const flow = new FlashFlow({
      mcuId: 'mcu-a',
      link,
      image: imageOf('1.6.0', 8 * 1024),
      publicKey,
      client: { timeoutMs: 500 },
      firstChunkTimeoutMs: 5000,
    });
    expect(await flow.run()).toMatchObject({ outcome: 'confirmed', version: '1.6.0' });
  });
});
