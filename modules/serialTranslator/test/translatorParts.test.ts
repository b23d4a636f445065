// The module's parts that need no hub: configuration parsing, the progress throttle and contract mapping, the
// job store across a reopen, and the image download checks (against a loopback HTTP server).
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MCU_FLASH_SCHEMA, isOtaError, parseMcuFlashProgress, resultCodes } from '@edge-ota/common';
import { parseMcus, readMcuKeys, settingsFromEnvironment } from '../src/configuration.ts';
import { FlashJobStore } from '../src/flashJobStore.ts';
import { ProgressThrottle, finalProgress, twinStatusOf } from '../src/flashProgressReport.ts';
import { downloadImage, sha256AsBase64 } from '../src/imageDownload.ts';
import { SERIAL_RESULT_CODES } from '../src/resultCodes.ts';

const pem = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
const dir = mkdtempSync(path.join(tmpdir(), 'translator-parts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('configuration', () => {
  const env = { IOTEDGE_IOTHUBHOSTNAME: 'hub.example', IOTEDGE_GATEWAYHOSTNAME: 'gw.local', SERIAL_STATE_DIR: dir };

  it('builds each MCU from the twin over the environment, with the key from the keys file and the gateway as host', () => {
    const keysFile = path.join(dir, 'keys.json');
    writeFileSync(keysFile, JSON.stringify({ 'mcu-1': 'a2V5' }));
    const { settings, problems } = settingsFromEnvironment({
      ...env,
      SERIAL_MCU_KEYS_FILE: keysFile,
      SERIAL_MCUS: JSON.stringify({ 'mcu-1': { port: '/dev/ttyUSB0', publicKey: pem }, 'mcu-2': { port: 'tcp://10.0.0.5:4000', publicKey: pem } }),
    });
    expect(problems).toEqual([]);
    const { keys } = readMcuKeys(settings);
    const { mcus, problems: mcuProblems } = parseMcus({ 'mcu-1': { port: '/dev/serial/by-id/usb-x-if00', baudRate: 230400 }, 'mcu-2': null }, settings, keys);
    expect(mcuProblems).toEqual([]);
    expect([...mcus.keys()]).toEqual(['mcu-1']);
    expect(mcus.get('mcu-1')).toMatchObject({
      port: { kind: 'serial', path: '/dev/serial/by-id/usb-x-if00' },
      baudRate: 230400,
      deviceConnectionString: 'HostName=hub.example;DeviceId=mcu-1;SharedAccessKey=a2V5;GatewayHostName=gw.local',
    });
  });

  it('names every problem and leaves the broken MCU out; twin keys only when allowed', () => {
    const { settings } = settingsFromEnvironment(env);
    const { mcus, problems } = parseMcus(
      {
        good: { port: 'tcp://[::1]:7000', publicKey: pem, deviceConnectionString: 'HostName=h;DeviceId=good;SharedAccessKey=eA==' },
        noPort: { port: 'COM3', publicKey: pem },
        badKey: { port: '/dev/ttyACM0', publicKey: 'not a key' },
        badBaud: { port: '/dev/ttyACM0', publicKey: pem, baudRate: 12 },
      },
      settings,
      new Map(),
    );
    expect([...mcus.keys()]).toEqual(['good']);
    expect(mcus.get('good')?.port).toEqual({ kind: 'tcp', host: '::1', port: 7000 });
    expect(mcus.get('good')?.deviceConnectionString).toBeUndefined();
    expect(problems.map((p) => p.setting).sort()).toEqual(['mcus.badBaud.baudRate', 'mcus.badKey.publicKey', 'mcus.good.deviceConnectionString', 'mcus.noPort.port']);
    const allowed = parseMcus({ good: { port: '/dev/x', publicKey: pem, deviceConnectionString: 'HostName=h;DeviceId=good;SharedAccessKey=eA==' } }, { ...settings, allowTwinKeys: true }, new Map());
    expect(allowed.mcus.get('good')?.deviceConnectionString).toBe('HostName=h;DeviceId=good;SharedAccessKey=eA==;GatewayHostName=gw.local');
  });

  it('reports a broken environment instead of failing', () => {
    const { settings, problems } = settingsFromEnvironment({ ...env, SERIAL_MCUS: '{', SERIAL_DEFAULT_BAUD_RATE: 'fast' });
    expect(settings.defaultBaudRate).toBe(115200);
    expect(problems.map((p) => p.setting).sort()).toEqual(['SERIAL_DEFAULT_BAUD_RATE', 'SERIAL_MCUS']);
    // The keys file defaults to the state dir and may be absent there; one named explicitly must exist.
    expect(settings.mcuKeysFile).toBe(path.join(dir, 'mcu-keys.json'));
    expect(readMcuKeys(settings).problems).toEqual([]);
    const named = settingsFromEnvironment({ ...env, SERIAL_MCU_KEYS_FILE: path.join(dir, 'absent.json') }).settings;
    expect(readMcuKeys(named).problems.map((p) => p.setting)).toEqual(['SERIAL_MCU_KEYS_FILE']);
  });
});

describe('progress on the wire', () => {
  it('sends phase changes and the final one always, upload progress every 5 % or 2 s', () => {
    const throttle = new ProgressThrottle(5, 2000);
    const base = { schema: MCU_FLASH_SCHEMA, jobId: 'j', mcuId: 'm', totalBytes: 1000 } as const;
    const sent = (phase: 'uploading' | 'testing', bytesSent: number, now: number, status: 'inProgress' | 'failed' = 'inProgress'): boolean =>
      throttle.shouldSend({ ...base, phase, status, bytesSent }, now);
    expect(sent('uploading', 0, 0)).toBe(true);
    expect(sent('uploading', 20, 10)).toBe(false);
    expect(sent('uploading', 50, 20)).toBe(true);
    expect(sent('uploading', 60, 2100)).toBe(true);
    expect(sent('uploading', 0, 2110)).toBe(true); // started over: news
    expect(sent('testing', 1000, 2120)).toBe(true);
    expect(sent('testing', 1000, 2130, 'failed')).toBe(true);
  });

  it('maps flow results onto contract statuses with the shared codes, and onto the twin status', () => {
    const rolledBack = finalProgress('j', 'm', { outcome: 'rolledback', mcuId: 'm', code: 'health-echo-failed', extendedResultCode: SERIAL_RESULT_CODES['health-echo-failed'], phase: 'health', reason: 'unhealthy', runningVersion: '1.0.0' }, 100, 100);
    expect(parseMcuFlashProgress(rolledBack)).toMatchObject({ status: 'rolledBack', runningVersion: '1.0.0', extendedResultCode: resultCodes.MCU_HEALTH_ECHO_FAILED.extendedResultCode });
    const refused = finalProgress('j', 'm', { outcome: 'refused', mcuId: 'm', code: 'image-bad-signature', extendedResultCode: SERIAL_RESULT_CODES['image-bad-signature'], reason: 'x' }, 100, 0, '1.0.0');
    expect(parseMcuFlashProgress(refused)).toMatchObject({ status: 'refused', bytesSent: 0, runningVersion: '1.0.0' });
    expect(SERIAL_RESULT_CODES['device-error']).toBe(resultCodes.MCU_DEVICE_ERROR.extendedResultCode);
    expect([twinStatusOf('queued', 'inProgress'), twinStatusOf('uploading', 'inProgress'), twinStatusOf('rebooting', 'inProgress'), twinStatusOf('done', 'refused'), twinStatusOf('done', 'rolledBack')])
      .toEqual(['downloading', 'applying', 'rebooting', 'error', 'rolledback']);
  });
});

describe('flash job store', () => {
  it('keeps jobs and their last progress across a reopen, and knows which are unfinished', () => {
    const file = path.join(dir, 'jobs.db');
    const request = { schema: MCU_FLASH_SCHEMA, jobId: 'j1', mcuId: 'm', image: { url: 'http://x', sha256: 'A'.repeat(43) + '=', sizeInBytes: 1, version: '1.0.0' } } as const;
    const first = new FlashJobStore(file);
    first.insert({ jobId: 'j1', mcuId: 'm', source: 'method', request, progress: { schema: MCU_FLASH_SCHEMA, jobId: 'j1', mcuId: 'm', phase: 'queued', status: 'inProgress' }, startedAt: '2026-01-01T00:00:00Z' });
    first.insert({ jobId: 'j2', mcuId: 'n', source: 'twin', request: { ...request, jobId: 'j2', mcuId: 'n' }, progress: { schema: MCU_FLASH_SCHEMA, jobId: 'j2', mcuId: 'n', phase: 'queued', status: 'inProgress' }, startedAt: '2026-01-01T00:00:01Z' });
    first.saveProgress({ schema: MCU_FLASH_SCHEMA, jobId: 'j2', mcuId: 'n', phase: 'done', status: 'succeeded' });
    first.close();
    const second = new FlashJobStore(file);
    expect(second.unfinished().map((j) => j.jobId)).toEqual(['j1']);
    expect(second.openJobFor('m')?.jobId).toBe('j1');
    expect(second.openJobFor('n')).toBeUndefined();
    expect(second.get('j2')).toMatchObject({ source: 'twin', progress: { status: 'succeeded' } });
    expect(second.get('j2')?.endedAt).toBeDefined();
    second.close();
  });
});

describe('image download', () => {
  const good = Buffer.alloc(10_000, 7);
  let base = '';
  let close: () => Promise<void>;
  beforeAll(async () => {
    const server = createServer((req, res) => {
      if (req.url === '/good') res.end(good);
      else if (req.url === '/long') res.end(Buffer.concat([good, Buffer.alloc(1)]));
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    close = () => new Promise((resolve) => server.close(() => resolve()));
  });
  afterAll(() => close());
  const sha = createHash('sha256').update(good).digest('base64');

  it('stores a matching image and refuses wrong size, wrong hash and HTTP errors with download codes', async () => {
    const file = path.join(dir, 'image.bin');
    expect(Buffer.from(await downloadImage({ url: `${base}/good`, sha256: sha, sizeInBytes: good.length, file }))).toEqual(good);
    const codeOf = (promise: Promise<unknown>): Promise<string> => promise.then(() => 'none', (error: unknown) => (isOtaError(error) ? error.code : String(error)));
    const other = path.join(dir, 'other.bin');
    expect(await codeOf(downloadImage({ url: `${base}/long`, sha256: sha, sizeInBytes: good.length, file: other }))).toBe('DOWNLOAD_TOO_LONG');
    expect(await codeOf(downloadImage({ url: `${base}/good`, sha256: sha, sizeInBytes: good.length + 1, file: other }))).toBe('DOWNLOAD_TRUNCATED');
    expect(await codeOf(downloadImage({ url: `${base}/good`, sha256: 'B'.repeat(43) + '=', sizeInBytes: good.length, file: other }))).toBe('DOWNLOAD_HASH_MISMATCH');
    expect(await codeOf(downloadImage({ url: `${base}/missing`, sha256: sha, sizeInBytes: good.length, file: other }))).toBe('DOWNLOAD_HTTP_ERROR');
    expect(await codeOf(downloadImage({ url: 'http://127.0.0.1:1/x', sha256: sha, sizeInBytes: good.length, file: other }))).toBe('DOWNLOAD_CONNECTION_FAILED');
    // Already there and matching (after a restart): no request at all.
    expect(Buffer.from(await downloadImage({ url: 'http://127.0.0.1:1/unreachable', sha256: sha, sizeInBytes: good.length, file }))).toEqual(good);
  });

  it('reads the tutorial check value as hex or base64', () => {
    expect(sha256AsBase64(createHash('sha256').update(good).digest('hex'))).toBe(sha);
    expect(sha256AsBase64(sha)).toBe(sha);
    expect(sha256AsBase64('nope')).toBeUndefined();
  });
});
