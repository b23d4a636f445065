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
import { startQemuDevice, stopAll } from './support/hostFirmware.ts';
import { HEALTH_FAIL_MARKER } from './support/simulatedDevice.ts';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const imageOf = (version: string, size: number, marker = ''): Uint8Array =>
  buildMcubootImage({ payload: Buffer.concat([Buffer.from(marker), Buffer.alloc(size, version)]), version, signingKey: privateKey });

let link: SerialPortLink | undefined;
afterEach(async () => {
  await link?.close();
  link = undefined;
  await stopAll();
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
  }, 60_000);
});
