import { generateKeyPairSync } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { memoryLinkPair } from '../src/memoryLink.ts';
import { FaultyLink } from '../src/faultyLink.ts';
import { SmpClient, SmpDeviceError, SmpTimeoutError } from '../src/smpClient.ts';
import { encodeConsoleFrame } from '../src/smpFraming.ts';
import { decodeSmpHeader, encodeSmpHeader } from '../src/smpHeader.ts';
import { encodeCbor } from '../src/smpCbor.ts';
import { echo, readParams } from '../src/osGroup.ts';
import { readImageState, testImage, uploadImage, maxChunkData } from '../src/imageGroup.ts';
import { verifyMcubootImage } from '../src/mcubootImage.ts';
import { buildMcubootImage } from '../src/mcubootImageBuilder.ts';
import { FlashFlow } from '../src/flashFlow.ts';
import type { FlashProgress } from '../src/flashFlow.ts';
import { McuLocks } from '../src/mcuLocks.ts';
import { HEALTH_FAIL_MARKER, SimulatedDevice } from './support/simulatedDevice.ts';
import type { ByteLink } from '../src/link.ts';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const image = (version: string, size = 16 * 1024, extra = ''): Uint8Array =>
  buildMcubootImage({
    payload: Buffer.concat([Buffer.from(extra), Buffer.alloc(size, version)]),
    version,
    signingKey: privateKey,
  });
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0)) await fn();
});

function setup(
  options: { faults?: ConstructorParameters<typeof FaultyLink>[1]; bufSize?: number; chatty?: boolean; replyDelayMs?: number } = {},
) {
  const [hostEnd, deviceEnd] = memoryLinkPair();
  const link: ByteLink = options.faults ? new FaultyLink(hostEnd, options.faults) : hostEnd;
  const device = new SimulatedDevice(deviceEnd, image('1.0.0'), {
    bufSize: options.bufSize ?? 1024,
    chatty: options.chatty ?? false,
    replyDelayMs: options.replyDelayMs ?? 0,
  });
  cleanups.push(() => device.stop(), () => hostEnd.close(), () => deviceEnd.close());
  return { link, device };
}

describe('SmpClient', () => {
  it('talks to a device that prints log lines between replies', async () => {
    const { link } = setup({ chatty: true });
    const client = new SmpClient(link);
    expect(await echo(client, 'ping')).toBe('ping');
    expect(await readParams(client)).toEqual({ bufSize: 1024, bufCount: 4, reported: true });
    expect(client.stats.noiseLines).toBeGreaterThan(0);
  });

  it('raises both error forms as SmpDeviceError', async () => {
    const [a, b] = memoryLinkPair();
    cleanups.push(() => a.close(), () => b.close());
    b.onData((bytes) => {
      const packet = Buffer.from(Buffer.from(bytes.subarray(2, -1)).toString(), 'base64').subarray(2, -2);
      const h = decodeSmpHeader(packet);
      const body = h.command === 0 ? { rc: 8 } : { err: { group: 1, rc: 6 } };
      const cbor = encodeCbor(body);
      void b.write(encodeConsoleFrame(Buffer.concat([encodeSmpHeader({ ...h, op: h.op + 1, length: cbor.length }), cbor])));
    });
    const client = new SmpClient(a);
    await expect(client.request({ op: 'read', group: 1, command: 0 })).rejects.toMatchObject({ name: 'SmpDeviceError', rc: 8 });
    const v2 = await client.request({ op: 'read', group: 1, command: 3 }).catch((e: unknown) => e);
    expect(v2).toBeInstanceOf(SmpDeviceError);
    expect(v2).toMatchObject({ group: 1, rc: 6 });
  });

  it('ignores replies with a foreign sequence number and accepts a late reply to an earlier attempt', async () => {
    const [a, b] = memoryLinkPair();
    cleanups.push(() => a.close(), () => b.close());
    let seen = 0;
    b.onData((bytes) => {
      const packet = Buffer.from(Buffer.from(bytes.subarray(2, -1)).toString(), 'base64').subarray(2, -2);
      const h = decodeSmpHeader(packet);
      seen++;
      const reply = (seq: number, text: string) => {
        const cbor = encodeCbor({ r: text });
        void b.write(encodeConsoleFrame(Buffer.concat([encodeSmpHeader({ ...h, seq, op: 3, length: cbor.length }), cbor])));
      };
      // First attempt: answered only with a stray seq; second attempt: answered with the first attempt's seq.
      if (seen === 1) reply((h.seq + 100) & 0xff, 'stray');
      else reply((h.seq - 1) & 0xff, 'late');
    });
    const client = new SmpClient(a, { timeoutMs: 100, retries: 2 });
    expect(await echo(client, 'x')).toBe('late');
    expect(client.stats.strayReplies).toBe(1);
  });

  it('gives up after bounded retries on a silent device', async () => {
    const [a, b] = memoryLinkPair();
    cleanups.push(() => a.close(), () => b.close());
    let requests = 0;
    b.onData(() => requests++);
    const client = new SmpClient(a, { timeoutMs: 30, retries: 2 });
    await expect(echo(client, 'x')).rejects.toBeInstanceOf(SmpTimeoutError);
    expect(requests).toBe(3);
  });

  it('sizes chunks so the whole request fits buf_size exactly', () => {
    for (const bufSize of [128, 384, 1024, 2048, 4096]) {
      const n = maxChunkData(bufSize, { off: 100_000 });
      const size = 8 + encodeCbor({ off: 100_000, data: new Uint8Array(n) }).length;
      expect(size).toBeLessThanOrEqual(bufSize);
      expect(8 + encodeCbor({ off: 100_000, data: new Uint8Array(n + 1) }).length).toBeGreaterThan(bufSize);
    }
  });

  it('uploads through a line that drops, duplicates and corrupts bytes', async () => {
    const fault = { drop: 0.0003, duplicate: 0.0003, corrupt: 0.0004 };
    const { link, device } = setup({ faults: { seed: 7, tx: fault, rx: fault } });
    const client = new SmpClient(link, { timeoutMs: 200, minTimeoutMs: 20 });
    const img = image('2.0.0', 24 * 1024);
    const result = await uploadImage(client, img, { bufSize: 1024, firstChunkTimeoutMs: 200, maxConsecutiveFailures: 30 });
    expect(result.retries).toBeGreaterThan(0);
    expect(Buffer.from(device.secondary.bytes!)).toEqual(Buffer.from(img));
    const slots = await readImageState(client);
    expect(slots.map((s) => s.version)).toEqual(['1.0.0', '2.0.0']);
    expect((link as FaultyLink).counts.corrupted).toBeGreaterThan(0);
  });

  it('keeps up to `window` chunks in flight and never more', async () => {
    for (const window of [1, 3]) {
      const { link, device } = setup({ replyDelayMs: 3 });
      const client = new SmpClient(link);
      const img = image('2.0.0', 24 * 1024);
      await uploadImage(client, img, { bufSize: 1024, window });
      expect(Buffer.from(device.secondary.bytes!)).toEqual(Buffer.from(img));
      expect(device.maxOutstanding).toBe(window);
    }
  });

  it('pipelines through a damaged line and still writes the exact image', async () => {
    const fault = { drop: 0.0003, duplicate: 0.0003, corrupt: 0.0004 };
    const { link, device } = setup({ faults: { seed: 11, tx: fault, rx: fault }, replyDelayMs: 1 });
    const client = new SmpClient(link, { timeoutMs: 200, minTimeoutMs: 20 });
    const img = image('2.0.0', 32 * 1024);
    const result = await uploadImage(client, img, { bufSize: 1024, window: 4, firstChunkTimeoutMs: 200, maxConsecutiveFailures: 30 });
    expect(result.retries).toBeGreaterThan(0);
    expect(device.maxOutstanding).toBeGreaterThan(1);
    expect(Buffer.from(device.secondary.bytes!)).toEqual(Buffer.from(img));
  });

  it('does not start over when the reply to the last chunk is lost', async () => {
    const [hostEnd, deviceEnd] = memoryLinkPair();
    const device = new SimulatedDevice(deviceEnd, image('1.0.0'), { bufSize: 1024, loseFinalUploadReply: true });
    cleanups.push(() => device.stop(), () => hostEnd.close(), () => deviceEnd.close());
    const client = new SmpClient(hostEnd, { timeoutMs: 100 });
    const img = image('2.0.0', 8 * 1024);
    const result = await uploadImage(client, img, { bufSize: 1024, window: 2 });
    expect(result.retries).toBe(1);
    expect(device.uploadsStarted).toBe(1);
    expect(Buffer.from(device.secondary.bytes!)).toEqual(Buffer.from(img));
  });

  it('asks before starting over when a device forgot a finished upload whose last reply was lost', async () => {
    const [hostEnd, deviceEnd] = memoryLinkPair();
    const device = new SimulatedDevice(deviceEnd, image('1.0.0'), { bufSize: 1024, loseFinalUploadReply: true, forgetsFinishedUpload: true });
    cleanups.push(() => device.stop(), () => hostEnd.close(), () => deviceEnd.close());
    const client = new SmpClient(hostEnd, { timeoutMs: 100 });
    const img = image('2.0.0', 8 * 1024);
    const hash = verifyMcubootImage(img).hash;
    await uploadImage(client, img, {
      bufSize: 1024,
      alreadyComplete: async () => (await readImageState(client)).some((s) => s.slot === 1 && Buffer.from(s.hash).equals(hash)),
    });
    expect(device.uploadsStarted).toBe(1);
    expect(Buffer.from(device.secondary.bytes!)).toEqual(Buffer.from(img));
  });

  it('gets through to a device that advertises a bigger buffer than it has, instead of hanging', async () => {
    const [hostEnd, deviceEnd] = memoryLinkPair();
    const device = new SimulatedDevice(deviceEnd, image('1.0.0'), { bufSize: 2048, realBufSize: 600 });
    cleanups.push(() => device.stop(), () => hostEnd.close(), () => deviceEnd.close());
    const client = new SmpClient(hostEnd, { timeoutMs: 100, minTimeoutMs: 20 });
    const img = image('2.0.0', 16 * 1024);
    const result = await uploadImage(client, img, { bufSize: 2048, window: 2 });
    expect(result.retries).toBeGreaterThan(0);
    expect(Buffer.from(device.secondary.bytes!)).toEqual(Buffer.from(img));
  });

  it('resumes an upload from the offset the device already holds', async () => {
    const { link, device } = setup();
    const client = new SmpClient(link);
    const img = image('2.0.0', 24 * 1024);
    let sent = 0;
    // Interrupt the first upload after about a third by failing it from the progress callback.
    await expect(
      uploadImage(client, img, {
        bufSize: 1024,
        onProgress: (p) => {
          sent = p.bytesSent;
          if (p.bytesSent > img.length / 3) throw new Error('cable pulled');
        },
      }),
    ).rejects.toThrow('cable pulled');
    expect(device.upload?.off).toBe(sent);
    const again = await uploadImage(client, img, { bufSize: 1024 });
    expect(again.resumed).toBe(true);
    expect(again.requests).toBeLessThan(Math.ceil((img.length - sent) / 900) + 3);
    expect(Buffer.from(device.secondary.bytes!)).toEqual(Buffer.from(img));
  });
});

describe('FlashFlow against the simulated device', () => {
  it('confirms a good update and reports progress per chunk', async () => {
    const { link, device } = setup();
    const flow = new FlashFlow({ mcuId: 'mcu-1', link, image: image('1.1.0'), publicKey, rebootTimeoutMs: 2000 });
    const events: FlashProgress[] = [];
    flow.on('progress', (p) => events.push(p));
    const result = await flow.run();
    expect(result).toMatchObject({ outcome: 'confirmed', version: '1.1.0', alreadyInstalled: false });
    expect(device.trial).toBe(false);
    const uploads = events.filter((e) => e.phase === 'upload');
    expect(uploads.length).toBeGreaterThan(10);
    expect(uploads.at(-1)?.bytesSent).toBe(uploads.at(-1)?.totalBytes);
    expect([...new Set(events.map((e) => e.phase))]).toEqual(['verify', 'connect', 'upload', 'test', 'reset', 'reconnect', 'check', 'health', 'confirm']);
    // Flashing the same image again is a no-op.
    const again = await new FlashFlow({ mcuId: 'mcu-1', link, image: image('1.1.0'), publicKey }).run();
    expect(again).toMatchObject({ outcome: 'confirmed', alreadyInstalled: true });
  });

  it('rolls back an image that fails its health check and names the version still running', async () => {
    const { link, device } = setup();
    const result = await new FlashFlow({ mcuId: 'mcu-1', link, image: image('1.2.0', 8192, HEALTH_FAIL_MARKER), publicKey, rebootTimeoutMs: 2000 }).run();
    expect(result).toMatchObject({ outcome: 'rolledback', code: 'health-echo-failed', phase: 'health', runningVersion: '1.0.0' });
    expect(device.resets).toBe(2);
  });

  it('finishes a flash cut off after the reset (gateway restarted): checks the trial image and confirms it', async () => {
    const { link, device } = setup();
    const client = new SmpClient(link);
    const img = image('1.7.0', 4096);
    await uploadImage(client, img, { bufSize: 1024 });
    await testImage(client, verifyMcubootImage(img).hash);
    client.close();
    device.boot();
    const result = await new FlashFlow({ mcuId: 'mcu-1', link, image: img, publicKey }).run();
    expect(result).toMatchObject({ outcome: 'confirmed', version: '1.7.0', alreadyInstalled: false });
    expect(device.resets).toBe(1);
    expect(device.trial).toBe(false);
  });

  it('does not upload again an image already staged in the secondary slot', async () => {
    const { link, device } = setup();
    const client = new SmpClient(link);
    const img = image('1.8.0', 8192);
    await uploadImage(client, img, { bufSize: 1024 });
    client.close();
    const flow = new FlashFlow({ mcuId: 'mcu-1', link, image: img, publicKey });
    const uploads: FlashProgress[] = [];
    flow.on('progress', (p) => p.phase === 'upload' && uploads.push(p));
    expect(await flow.run()).toMatchObject({ outcome: 'confirmed', version: '1.8.0' });
    expect(uploads).toEqual([{ mcuId: 'mcu-1', phase: 'upload', bytesSent: img.length, totalBytes: img.length }]);
    expect(device.resets).toBe(1);
  });

  it('rolls back when the app-specific check says no', async () => {
    const { link } = setup();
    const result = await new FlashFlow({
      mcuId: 'mcu-1',
      link,
      image: image('1.3.0', 4096),
      publicKey,
      healthCheck: () => Promise.resolve(false),
    }).run();
    expect(result).toMatchObject({ outcome: 'rolledback', code: 'health-app-failed', runningVersion: '1.0.0' });
  });

  it('refuses a corrupted and a wrongly signed image without sending anything', async () => {
    const { link, device } = setup();
    const corrupted = image('1.4.0', 4096);
    corrupted[0x300]! ^= 0xff;
    const stranger = generateKeyPairSync('ed25519');
    const foreign = buildMcubootImage({ payload: new Uint8Array(4096), version: '1.4.0', signingKey: stranger.privateKey });
    expect(await new FlashFlow({ mcuId: 'm', link, image: corrupted, publicKey }).run()).toMatchObject({ outcome: 'refused', code: 'image-hash-mismatch' });
    expect(await new FlashFlow({ mcuId: 'm', link, image: foreign, publicKey }).run()).toMatchObject({ outcome: 'refused', code: 'image-key-mismatch' });
    expect(device.requestsSeen).toBe(0);
  });

  it('serialises flashes of one MCU and runs different MCUs side by side', async () => {
    const locks = new McuLocks();
    const order: string[] = [];
    const job = (name: string, ms: number) => () =>
      new Promise<void>((resolve) => {
        order.push(`start ${name}`);
        setTimeout(() => {
          order.push(`end ${name}`);
          resolve();
        }, ms);
      });
    await Promise.all([locks.run('a', job('a1', 20)), locks.run('a', job('a2', 1)), locks.run('b', job('b1', 1))]);
    expect(order.indexOf('start a2')).toBeGreaterThan(order.indexOf('end a1'));
    expect(order.indexOf('start b1')).toBeLessThan(order.indexOf('end a1'));
    expect(locks.isBusy('a')).toBe(false);
  });
});

describe('FlashFlow through a damaged line', () => {
  it('confirms an update while bytes are dropped, duplicated and corrupted both ways', async () => {
    const fault = { drop: 0.0002, duplicate: 0.0002, corrupt: 0.0004 };
    const { link, device } = setup({ faults: { seed: 99, tx: fault, rx: fault } });
    const result = await new FlashFlow({
      mcuId: 'mcu-1',
      link,
      image: image('3.0.0', 12 * 1024),
      publicKey,
      client: { timeoutMs: 300, minTimeoutMs: 20, retries: 6 },
      firstChunkTimeoutMs: 300,
      rebootTimeoutMs: 5000,
    }).run();
    expect(result).toMatchObject({ outcome: 'confirmed', version: '3.0.0' });
    expect(device.trial).toBe(false);
    const counts = (link as FaultyLink).counts;
    expect(counts.corrupted + counts.dropped + counts.duplicated).toBeGreaterThan(5);
  });
});
