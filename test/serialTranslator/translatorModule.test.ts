// The real serialTranslator module process against the hub emulator, flashing the C firmware sample built for
// the host on socat pty pairs: the orchestrator-facing methods (flashFirmware, getFlashStatus), the mcuProgress
// messages routed $upstream (seen through an Event Grid subscriber), and each MCU's own twin, connected through
// the gateway as a child device.
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { McuFlashProgress, McuFlashRequest } from '@edge-ota/common';
import { MCU_FLASH_SCHEMA, resultCodes } from '@edge-ota/common';
import { deployModules } from '../../cloud/hubEmulator/test/support/edgeDeployment.ts';
import type { EmulatorFixture } from '../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import { eventually, startEmulator } from '../../cloud/hubEmulator/test/support/emulatorFixture.ts';
import type { EventGridSink } from '../../cloud/hubEmulator/test/support/eventGridSink.ts';
import { startEventGridSink } from '../../cloud/hubEmulator/test/support/eventGridSink.ts';
import { buildMcubootImage } from '../../modules/serialTranslator/src/mcubootImageBuilder.ts';
import { startHostDevice, stopAll } from '../../modules/serialTranslator/test/support/hostFirmware.ts';
import type { HostDevice } from '../../modules/serialTranslator/test/support/hostFirmware.ts';
import { HEALTH_FAIL_MARKER } from '../../modules/serialTranslator/test/support/simulatedDevice.ts';
import type { LineFaultRelay } from './support/lineFaultRelay.ts';
import { startLineFaultRelay } from './support/lineFaultRelay.ts';
import { finalProgressMessage, invokeTranslator, progressMessages, reportedFirmware } from './support/translatorObservation.ts';
import type { TranslatorProcess } from './support/translatorProcess.ts';
import { startTranslatorProcess } from './support/translatorProcess.ts';

const GATEWAY = 'gw-serial';
const MCUS = ['mcu-good', 'mcu-health', 'mcu-refuse', 'mcu-pull', 'mcu-noise', 'mcu-twin', 'mcu-restart'] as const;
type McuName = (typeof MCUS)[number];

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();

function imageOf(version: string, size: number, marker = ''): Buffer {
  return Buffer.from(buildMcubootImage({ payload: Buffer.concat([Buffer.from(marker), Buffer.alloc(size, `payload of ${version} `)]), version, signingKey: privateKey }));
}
const sha256 = (bytes: Buffer, encoding: 'base64' | 'hex' = 'base64'): string => createHash('sha256').update(bytes).digest(encoding);

describe('serialTranslator module through the hub emulator', () => {
  let sink: EventGridSink;
  let hub: EmulatorFixture;
  let translator: TranslatorProcess | undefined;
  let relay: LineFaultRelay;
  let stateDir: string;
  let generationId: string;
  let moduleEnv: Record<string, string>;
  const devices = new Map<McuName, HostDevice>();
  const images = new Map<string, Buffer>();
  let imageBase: string;
  const imageRequests: string[] = [];
  let closeImageServer: () => Promise<void>;

  /** Publishes an image on the loopback HTTP server and returns a flash request for it. */
  function request(jobId: string, mcuId: McuName, image: Buffer, version: string): McuFlashRequest {
    images.set(`/${jobId}.bin`, image);
    return { schema: MCU_FLASH_SCHEMA, jobId, mcuId, image: { url: `${imageBase}/${jobId}.bin`, sha256: sha256(image), sizeInBytes: image.length, version } };
  }

  const invoke = (methodName: string, payload: unknown): Promise<{ status: number; payload: unknown }> => invokeTranslator(hub, GATEWAY, methodName, payload);
  const messagesOf = (jobId: string): McuFlashProgress[] => progressMessages(sink, jobId);
  const finalMessage = (jobId: string, timeoutMs?: number): Promise<McuFlashProgress> => finalProgressMessage(sink, jobId, timeoutMs);
  const mcuFirmware = (mcuId: string): Promise<Record<string, string>> => reportedFirmware(hub, mcuId);

  async function startTranslator(): Promise<TranslatorProcess> {
    translator = await startTranslatorProcess({ hub: hub.hubProcess.info, deviceId: GATEWAY, generationId, env: moduleEnv });
    return translator;
  }

  beforeAll(async () => {
    sink = await startEventGridSink();
    hub = await startEmulator({ eventGridWebhooks: [sink.url] });
    // Plays the origin and the gateway's content cache (/cache/sha256/<hex>?origin=...) at once.
    const server = createServer((req, res) => {
      imageRequests.push(req.url ?? '');
      const cached = /^\/cache\/sha256\/([0-9a-f]{64})\?origin=/.exec(req.url ?? '');
      const body = cached ? [...images.values()].find((image) => sha256(image, 'hex') === cached[1]) : images.get(req.url ?? '');
      if (!body) res.writeHead(404).end();
      else res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    imageBase = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    closeImageServer = () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });

    await hub.createDevice(GATEWAY, { edge: true });
    generationId = (await deployModules(hub, GATEWAY, ['serialTranslator'], {
      mcuProgress: 'FROM /messages/modules/serialTranslator/outputs/mcuProgress INTO $upstream',
    })).serialTranslator ?? '';
    // The MCU identities are children of the gateway; their keys reach the module in a file on its volume.
    const keys: Record<string, string> = {};
    for (const mcuId of MCUS) keys[mcuId] = (await hub.createDevice(mcuId, { parent: GATEWAY })).key;
    stateDir = mkdtempSync(path.join(tmpdir(), 'serial-translator-'));
    const keysFile = path.join(stateDir, 'mcu-keys.json');
    writeFileSync(keysFile, JSON.stringify(keys));

    for (const mcuId of MCUS) devices.set(mcuId, await startHostDevice());
    relay = await startLineFaultRelay(devices.get('mcu-noise')!.pty.hostPath, { seed: 1000, corrupt: 0.001 });
    const mcus: Record<string, unknown> = {};
    for (const mcuId of MCUS) {
      mcus[mcuId] = { port: mcuId === 'mcu-noise' ? relay.url : devices.get(mcuId)!.pty.hostPath, baudRate: 115200, publicKey: publicPem };
    }
    // A noisy line needs more patience per request than a clean one.
    (mcus['mcu-noise'] as Record<string, unknown>).smp = { retries: 6, timeoutMs: 1000 };
    await hub.registry.updateModuleTwin(GATEWAY, 'serialTranslator', { properties: { desired: { mcus } } }, '*');
    moduleEnv = { SERIAL_STATE_DIR: path.join(stateDir, 'state'), SERIAL_MCU_KEYS_FILE: keysFile, SERIAL_CONTENT_CACHE_URL: `${imageBase}/cache` };
    await startTranslator();
  }, 120_000);

  afterAll(async () => {
    await translator?.stop();
    await relay?.close();
    await stopAll();
    await closeImageServer?.();
    await hub?.stop();
    await sink?.close();
    for (const device of devices.values()) rmSync(device.dir, { recursive: true, force: true });
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('reports each MCU identity with its running version, connected through the gateway', async () => {
    for (const mcuId of MCUS) {
      await eventually(async () => ((await mcuFirmware(mcuId)).currentFwVersion === '1.0.0' ? true : undefined), 20_000, `${mcuId} currentFwVersion`);
    }
    const reported = await eventually(async () => {
      const twin = (await hub.registry.getModuleTwin(GATEWAY, 'serialTranslator')).responseBody as unknown as { properties: { reported: Record<string, unknown> } };
      const mcus = twin.properties.reported.mcus as Record<string, { link: string; identity: string }> | undefined;
      return MCUS.every((id) => mcus?.[id]?.link === 'up' && mcus[id].identity === 'connected') ? twin.properties.reported : undefined;
    }, 15_000, 'module twin: every MCU link up and identity connected');
    expect(reported.configurationProblems).toEqual([]);
    expect(reported.mcus).toMatchObject({ 'mcu-good': { runningVersion: '1.0.0', baudRate: 115200 }, 'mcu-noise': { port: relay.url } });
  });

  it('refuses malformed requests, unknown MCUs and unknown jobs with the contract codes', async () => {
    const malformed = await invoke('flashFirmware', { schema: MCU_FLASH_SCHEMA, jobId: 'bad job id', mcuId: 'mcu-good' });
    expect(malformed).toMatchObject({ status: 400, payload: { accepted: false, code: 'MCU_FLASH_REQUEST_INVALID' } });
    const unknown = await invoke('flashFirmware', { ...request('job-unknown-mcu', 'mcu-good', imageOf('1.0.1', 1024), '1.0.1'), mcuId: 'mcu-nowhere' });
    expect(unknown).toMatchObject({ status: 400, payload: { code: 'MCU_UNKNOWN', extendedResultCode: resultCodes.MCU_UNKNOWN.extendedResultCode } });
    expect(await invoke('getFlashStatus', { jobId: 'never-seen' })).toMatchObject({ status: 404 });
  });

  it('confirms a good update: progress through every phase, throttled, and the MCU twin on the new version', async () => {
    const image = imageOf('1.1.0', 48 * 1024);
    const flash = request('job-good', 'mcu-good', image, '1.1.0');
    expect(await invoke('flashFirmware', flash)).toMatchObject({ status: 202, payload: { accepted: true } });
    const final = await finalMessage('job-good');
    expect(final).toMatchObject({ phase: 'done', status: 'succeeded', runningVersion: '1.1.0', resultCode: 1, bytesSent: image.length, totalBytes: image.length });
    const messages = messagesOf('job-good');
    const phases = [...new Set(messages.map((m) => m.phase))];
    expect(phases).toEqual(['queued', 'verifying', 'uploading', 'testing', 'rebooting', 'healthCheck', 'confirming', 'done']);
    // Per-chunk progress stays in the module: 48 KiB is ~40 chunks, the cloud sees at most one per 5 %.
    const uploads = messages.filter((m) => m.phase === 'uploading');
    expect(uploads.length).toBeGreaterThan(1);
    expect(uploads.length).toBeLessThanOrEqual(22);
    expect(await invoke('getFlashStatus', { jobId: 'job-good' })).toEqual({ status: 200, payload: final });
    // The same job again is not a second flash.
    expect(await invoke('flashFirmware', flash)).toMatchObject({ status: 200, payload: { accepted: true, known: true } });
    const twin = await eventually(async () => {
      const firmware = await mcuFirmware('mcu-good');
      return firmware.currentFwVersion === '1.1.0' && firmware.fwUpdateStatus === 'current' ? firmware : undefined;
    }, 15_000, 'mcu-good twin on 1.1.0');
    expect(twin.lastFwUpdateEndTime! >= twin.lastFwUpdateStartTime!).toBe(true);
  }, 90_000);

  it('reverts an image that fails its health check and reports the version really running', async () => {
    const image = imageOf('1.2.0', 16 * 1024, HEALTH_FAIL_MARKER);
    expect(await invoke('flashFirmware', request('job-health', 'mcu-health', image, '1.2.0'))).toMatchObject({ status: 202 });
    const final = await finalMessage('job-health');
    expect(final).toMatchObject({ status: 'rolledBack', runningVersion: '1.0.0', resultCode: 0, extendedResultCode: resultCodes.MCU_HEALTH_ECHO_FAILED.extendedResultCode });
    await eventually(async () => {
      const firmware = await mcuFirmware('mcu-health');
      return firmware.fwUpdateStatus === 'rolledback' && firmware.currentFwVersion === '1.0.0' ? true : undefined;
    }, 15_000, 'mcu-health twin rolled back');
  }, 90_000);

  it('refuses a corrupted and a wrongly signed image before anything is uploaded', async () => {
    const corrupted = imageOf('1.3.0', 16 * 1024);
    corrupted[2000]! ^= 0x10;
    const stranger = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const foreign = Buffer.from(buildMcubootImage({ payload: Buffer.alloc(16 * 1024), version: '1.3.0', signingKey: stranger.privateKey, omitKeyHash: true }));
    expect(await invoke('flashFirmware', request('job-corrupted', 'mcu-refuse', corrupted, '1.3.0'))).toMatchObject({ status: 202 });
    const first = await finalMessage('job-corrupted');
    expect(await invoke('flashFirmware', request('job-foreign', 'mcu-refuse', foreign, '1.3.0'))).toMatchObject({ status: 202 });
    const second = await finalMessage('job-foreign');
    expect([first, second].map((m) => [m.status, m.extendedResultCode, m.bytesSent])).toEqual([
      ['refused', resultCodes.MCU_IMAGE_HASH_MISMATCH.extendedResultCode, 0],
      ['refused', resultCodes.MCU_IMAGE_BAD_SIGNATURE.extendedResultCode, 0],
    ]);
    for (const jobId of ['job-corrupted', 'job-foreign']) expect(messagesOf(jobId).some((m) => m.phase === 'uploading')).toBe(false);
    const firmware = await eventually(async () => {
      const f = await mcuFirmware('mcu-refuse');
      return f.fwUpdateStatus === 'error' ? f : undefined;
    }, 15_000, 'mcu-refuse twin error');
    expect(firmware).toMatchObject({ currentFwVersion: '1.0.0', fwUpdateStatus: 'error' });
    expect(firmware.fwUpdateSubstatus).toMatch(/image-bad-signature/);
  }, 60_000);

  it('resumes an upload after the cable is pulled, and refuses a second job for the busy MCU meanwhile', async () => {
    const image = imageOf('1.4.0', 256 * 1024);
    expect(await invoke('flashFirmware', request('job-pull', 'mcu-pull', image, '1.4.0'))).toMatchObject({ status: 202 });
    const atPull = await eventually(async () => {
      const status = (await invoke('getFlashStatus', { jobId: 'job-pull' })).payload as McuFlashProgress;
      return status.phase === 'uploading' && (status.bytesSent ?? 0) > image.length / 4 ? status : undefined;
    }, 30_000, 'upload past a quarter');
    const device = devices.get('mcu-pull')!;
    await device.pty.unplug();
    const busy = await invoke('flashFirmware', request('job-pull-2', 'mcu-pull', imageOf('1.4.1', 1024), '1.4.1'));
    expect(busy).toMatchObject({ status: 400, payload: { code: 'MCU_BUSY' } });
    await new Promise((resolve) => setTimeout(resolve, 500));
    await device.pty.plug();
    // Every upload position the module reports after the plug-in is at or past where it was when pulled.
    const afterPlug: number[] = [];
    await eventually(async () => {
      const status = (await invoke('getFlashStatus', { jobId: 'job-pull' })).payload as McuFlashProgress;
      if (status.phase === 'uploading') afterPlug.push(status.bytesSent ?? 0);
      return status.status === 'inProgress' ? undefined : status;
    }, 90_000, 'job-pull to end');
    expect(afterPlug.length).toBeGreaterThan(0);
    expect(Math.min(...afterPlug)).toBeGreaterThanOrEqual(atPull.bytesSent!);
    const final = await finalMessage('job-pull', 90_000);
    expect(final).toMatchObject({ status: 'succeeded', runningVersion: '1.4.0' });
    // Continued from where the device was, not from zero.
    const afterPull = messagesOf('job-pull').filter((m) => m.phase === 'uploading' && m.bytesSent! > 0);
    expect(afterPull.at(-1)!.bytesSent).toBeGreaterThanOrEqual(atPull.bytesSent!);
    expect(afterPull.every((m, i) => i === 0 || m.bytesSent! >= afterPull[i - 1]!.bytesSent!)).toBe(true);
    expect(translator!.lines.some((l) => l.includes('job-pull-2'))).toBe(false);
    expect(translator!.lines.some((l) => l.includes('MCU mcu-pull: link down'))).toBe(true);
  }, 120_000);

  it('flashes over a tcp:// serial adapter whose line corrupts 1 byte in 1,000 in each direction', async () => {
    const image = imageOf('1.5.0', 32 * 1024);
    expect(await invoke('flashFirmware', request('job-noise', 'mcu-noise', image, '1.5.0'))).toMatchObject({ status: 202 });
    const final = await finalMessage('job-noise', 120_000);
    expect(final).toMatchObject({ status: 'succeeded', runningVersion: '1.5.0' });
    expect(relay.counts.corrupted).toBeGreaterThan(20);
  }, 150_000);

  it('starts an update from the MCU twin desired firmware (the firmware-update tutorial pattern)', async () => {
    const image = imageOf('1.7.0', 24 * 1024);
    images.set('/twin-1.7.0.bin', image);
    await hub.registry.updateTwin('mcu-twin', {
      properties: { desired: { firmware: { fwVersion: '1.7.0', fwPackageURI: `${imageBase}/twin-1.7.0.bin`, fwPackageCheckValue: sha256(image, 'hex') } } },
    }, '*');
    const firmware = await eventually(async () => {
      const f = await mcuFirmware('mcu-twin');
      return f.currentFwVersion === '1.7.0' && f.fwUpdateStatus === 'current' ? f : undefined;
    }, 60_000, 'mcu-twin on 1.7.0');
    expect(firmware.pendingFwVersion).toBe('');
    // Fetched through the content cache, named by its hash, with the twin's URI as origin.
    expect(imageRequests).toContain(`/cache/sha256/${sha256(image, 'hex')}?origin=${encodeURIComponent(`${imageBase}/twin-1.7.0.bin`)}`);
    expect(imageRequests).not.toContain('/twin-1.7.0.bin');
    const jobId = /job (twin:mcu-twin:1\.7\.0:[0-9a-f]{16}:\d+): /.exec(await translator!.waitForLine(/job twin:mcu-twin:1\.7\.0:/))?.[1];
    expect(jobId).toContain(sha256(image, 'hex').slice(0, 16));
    expect(await invoke('getFlashStatus', { jobId })).toMatchObject({ status: 200, payload: { status: 'succeeded', runningVersion: '1.7.0' } });
    // An unrelated desired patch replays the document: the same firmware is not flashed again.
    await hub.registry.updateTwin('mcu-twin', { properties: { desired: { unrelated: 1 } } }, '*');
    const back = imageOf('1.0.5', 8 * 1024);
    images.set('/twin-1.0.5.bin', back);
    await hub.registry.updateTwin('mcu-twin', {
      properties: { desired: { firmware: { fwVersion: '1.0.5', fwPackageURI: `${imageBase}/twin-1.0.5.bin`, fwPackageCheckValue: sha256(back) } } },
    }, '*');
    await eventually(async () => ((await mcuFirmware('mcu-twin')).currentFwVersion === '1.0.5' ? true : undefined), 60_000, 'mcu-twin on 1.0.5 (base64 check value)');
    expect(translator!.lines.filter((l) => /job twin:mcu-twin:1\.7\.0:.*twin asks/.test(l))).toHaveLength(1);
  }, 90_000);

  it('flashes two MCUs at the same time', async () => {
    const first = imageOf('1.8.0', 128 * 1024);
    const second = imageOf('1.3.1', 128 * 1024);
    expect(await invoke('flashFirmware', request('job-par-a', 'mcu-good', first, '1.8.0'))).toMatchObject({ status: 202 });
    expect(await invoke('flashFirmware', request('job-par-b', 'mcu-refuse', second, '1.3.1'))).toMatchObject({ status: 202 });
    // Seen both uploading at once: the per-MCU lock does not serialise different MCUs.
    let overlapped = false;
    await eventually(async () => {
      const [a, b] = await Promise.all(['job-par-a', 'job-par-b'].map(async (jobId) => (await invoke('getFlashStatus', { jobId })).payload as McuFlashProgress));
      if (a!.status === 'inProgress' && b!.status === 'inProgress' && (a!.bytesSent ?? 0) > 0 && (b!.bytesSent ?? 0) > 0) overlapped = true;
      return a!.status !== 'inProgress' && b!.status !== 'inProgress' ? true : undefined;
    }, 60_000, 'both parallel jobs to end');
    expect(overlapped).toBe(true);
    expect((await finalMessage('job-par-a')).status).toBe('succeeded');
    expect((await finalMessage('job-par-b')).status).toBe('succeeded');
  }, 90_000);

  it('re-opens a port whose path changes in the module twin, and forgets an MCU set to null', async () => {
    // Another name for the same adapter, as /dev/serial/by-id is for /dev/ttyUSBn.
    const device = devices.get('mcu-health')!;
    const alias = path.join(device.dir, 'by-id-usb-mcu-health');
    symlinkSync(device.pty.hostPath, alias);
    await hub.registry.updateModuleTwin(GATEWAY, 'serialTranslator', { properties: { desired: { mcus: { 'mcu-health': { port: alias }, 'mcu-twin': null } } } }, '*');
    await translator!.waitForLine(new RegExp(`MCU mcu-health: link up \\(${alias.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\)`), 15_000);
    const reported = await eventually(async () => {
      const twin = (await hub.registry.getModuleTwin(GATEWAY, 'serialTranslator')).responseBody as unknown as { properties: { reported: { mcus: Record<string, { port: string } | undefined> } } };
      const mcus = twin.properties.reported.mcus;
      return mcus['mcu-health']?.port === alias && mcus['mcu-twin'] === undefined ? mcus : undefined;
    }, 15_000, 'module twin with the new port and without mcu-twin');
    expect(reported['mcu-good']).toBeDefined();
    const image = imageOf('1.2.1', 8 * 1024);
    expect(await invoke('flashFirmware', request('job-alias', 'mcu-health', image, '1.2.1'))).toMatchObject({ status: 202 });
    expect(await finalMessage('job-alias')).toMatchObject({ status: 'succeeded', runningVersion: '1.2.1' });
    expect(await invoke('flashFirmware', request('job-gone', 'mcu-twin', image, '1.2.1'))).toMatchObject({ status: 400, payload: { code: 'MCU_UNKNOWN' } });
  }, 60_000);

  it('answers getFlashStatus after a module restart mid-upload and finishes the interrupted flash', async () => {
    const image = imageOf('1.6.0', 256 * 1024);
    expect(await invoke('flashFirmware', request('job-restart', 'mcu-restart', image, '1.6.0'))).toMatchObject({ status: 202 });
    await eventually(async () => {
      const status = (await invoke('getFlashStatus', { jobId: 'job-restart' })).payload as McuFlashProgress;
      return status.phase === 'uploading' && (status.bytesSent ?? 0) > image.length / 4 ? true : undefined;
    }, 30_000, 'upload past a quarter');
    await translator!.kill();
    await startTranslator();
    const status = await invoke('getFlashStatus', { jobId: 'job-restart' });
    expect(status.status).toBe(200);
    expect((status.payload as McuFlashProgress).jobId).toBe('job-restart');
    const final = await finalMessage('job-restart', 90_000);
    expect(final).toMatchObject({ status: 'succeeded', runningVersion: '1.6.0' });
    expect(translator!.lines.some((l) => /job-restart .*interrupted at uploading: resuming/.test(l))).toBe(true);
    // Earlier jobs survive the restart too.
    expect(await invoke('getFlashStatus', { jobId: 'job-good' })).toMatchObject({ status: 200, payload: { status: 'succeeded' } });
  }, 150_000);
});
