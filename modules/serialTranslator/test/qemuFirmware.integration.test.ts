// The flash flow against the firmware sample built for a Cortex-M3 board, running under QEMU (mps2-an385),
// over the emulated CMSDK UART. The reset is a real SYSRESETREQ, so the swap decision runs in the emulated boot.
import { generateKeyPairSync } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { SerialPortLink } from '../src/serialPortLink.ts';
import { SmpClient } from '../src/smpClient.ts';
import { readImageState } from '../src/imageGroup.ts';
import { reset, echo } from '../src/osGroup.ts';
import { buildMcubootImage } from '../src/mcubootImageBuilder.ts';
import { FlashFlow } from '../src/flashFlow.ts';
import type { FlashResult } from '../src/flashFlow.ts';
import { startQemuDevice, startQemuDeviceOnSocket, stopAll } from './support/hostFirmware.ts';
import { FaultyLink } from '../src/faultyLink.ts';
import { rmSync } from 'node:fs';
import { HEALTH_FAIL_MARKER } from './support/simulatedDevice.ts';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const imageOf = (version: string, size: number, marker = ''): Uint8Array =>
  buildMcubootImage({ payload: Buffer.concat([Buffer.from(marker), Buffer.alloc(size, version)]), version, signingKey: privateKey });

let link: SerialPortLink | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await link?.close();
  link = undefined;
  await stopAll();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function slots(client: SmpClient): Promise<string[]> {
  return (await readImageState(client)).map((s) => `${s.slot}:${s.version}${s.active ? '*' : ''}${s.confirmed ? 'c' : ''}`);
}

describe('flashing the QEMU (mps2-an385) firmware sample over its emulated UART', () => {
  it('confirms a good update, reverts one that fails its health check, refuses bad images', async () => {
    const { ptyPath } = await startQemuDevice();
    link = await SerialPortLink.open({ path: ptyPath, baudRate: 115200 });

    const good = await new FlashFlow({ mcuId: 'qemu', link, image: imageOf('2.1.0', 24 * 1024), publicKey, rebootTimeoutMs: 10_000 }).run();
    expect(good).toMatchObject({ outcome: 'confirmed', version: '2.1.0' });

    // The confirmed image must survive another emulated reset: the slots are kept where a reset does not reach.
    const client = new SmpClient(link);
    await reset(client);
    for (let i = 0; i < 50; i++) {
      if (await echo(client, 'up?', 200, 0).then(() => true, () => false)) break;
    }
    expect(await slots(client)).toEqual(['0:2.1.0*c', '1:1.0.0']);
    client.close();

    const bad = await new FlashFlow({ mcuId: 'qemu', link, image: imageOf('2.2.0', 16 * 1024, HEALTH_FAIL_MARKER), publicKey, rebootTimeoutMs: 10_000 }).run();
    expect(bad).toMatchObject({ outcome: 'rolledback', code: 'health-echo-failed', runningVersion: '2.1.0' });

    const corrupted = imageOf('2.3.0', 8 * 1024);
    corrupted[600]! ^= 1;
    const refused: FlashResult = await new FlashFlow({ mcuId: 'qemu', link, image: corrupted, publicKey }).run();
    expect(refused).toMatchObject({ outcome: 'refused', code: 'image-hash-mismatch' });
    const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const foreign = buildMcubootImage({ payload: new Uint8Array(8192), version: '2.3.0', signingKey: stranger.privateKey });
    expect(await new FlashFlow({ mcuId: 'qemu', link, image: foreign, publicKey }).run()).toMatchObject({ outcome: 'refused', code: 'image-key-mismatch' });
  }, 60_000);

  it('resumes after the cable to the emulated UART is pulled, and survives 1 byte in 1,000 corrupted', async () => {
    const { pty, dir } = await startQemuDeviceOnSocket();
    dirs.push(dir);
    link = await SerialPortLink.open({ path: pty.hostPath, baudRate: 115200 });
    const image = imageOf('3.0.0', 48 * 1024);
    const flow = new FlashFlow({ mcuId: 'qemu', link, image, publicKey, rebootTimeoutMs: 10_000 });
    let pulled: Promise<void> | undefined;
    let maxBefore = 0;
    let minAfter = Infinity;
    flow.on('progress', (p) => {
      if (p.phase !== 'upload') return;
      if (!pulled && p.bytesSent > image.length / 3) {
        maxBefore = p.bytesSent;
        pulled = (async () => {
          await pty.unplug();
          await new Promise((resolve) => setTimeout(resolve, 300));
          await pty.plug();
        })();
      } else if (pulled) {
        minAfter = Math.min(minAfter, p.bytesSent);
      }
    });
    expect(await flow.run()).toMatchObject({ outcome: 'confirmed', version: '3.0.0' });
    await pulled;
    expect(link.reopenCount).toBeGreaterThan(0);
    expect(minAfter).toBeGreaterThanOrEqual(maxBefore);

    const faulty = new FaultyLink(link, { seed: 385, tx: { corrupt: 0.001 }, rx: { corrupt: 0.001 } });
    const noisy = await new FlashFlow({
      mcuId: 'qemu',
      link: faulty,
      image: imageOf('3.1.0', 16 * 1024),
      publicKey,
      client: { retries: 6, timeoutMs: 1000 },
      firstChunkTimeoutMs: 1500,
      rebootTimeoutMs: 10_000,
    }).run();
    expect(noisy).toMatchObject({ outcome: 'confirmed', version: '3.1.0' });
    expect(faulty.counts.corrupted).toBeGreaterThan(10);
  }, 120_000);
});
