// The real serialTranslator module flashing the firmware sample built for a Cortex-M3 board under QEMU
// (mps2-an385, real SYSRESETREQ resets), over its emulated UART bridged to a pty by socat, with the module on the
// hub emulator: the same contract, progress messages and MCU twin as with the host build.
import { createHash, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
import { startQemuDeviceOnSocket, stopAll } from '../../modules/serialTranslator/test/support/hostFirmware.ts';
import type { PtyPair } from '../../modules/serialTranslator/test/support/hostFirmware.ts';
import { HEALTH_FAIL_MARKER } from '../../modules/serialTranslator/test/support/simulatedDevice.ts';
import type { LineFaultRelay } from './support/lineFaultRelay.ts';
import { startLineFaultRelay } from './support/lineFaultRelay.ts';
import { finalProgressMessage, invokeTranslator, reportedFirmware } from './support/translatorObservation.ts';
import type { TranslatorProcess } from './support/translatorProcess.ts';
import { startTranslatorProcess } from './support/translatorProcess.ts';

const GATEWAY = 'gw-qemu';
const MCU = 'mcu-qemu';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
const imageOf = (version: string, size: number, marker = ''): Buffer =>
  Buffer.from(buildMcubootImage({ payload: Buffer.concat([Buffer.from(marker), Buffer.alloc(size, version)]), version, signingKey: privateKey }));

describe('serialTranslator module flashing the QEMU firmware over its emulated UART', () => {
  let sink: EventGridSink;
  let hub: EmulatorFixture;
  let translator: TranslatorProcess | undefined;
  let relay: LineFaultRelay | undefined;
  let pty: PtyPair;
  let qemuDir: string;
  let stateDir: string;
  let imageBase: string;
  let closeImageServer: () => Promise<void>;
  const images = new Map<string, Buffer>();

  const invoke = (methodName: string, payload: unknown): Promise<{ status: number; payload: unknown }> => invokeTranslator(hub, GATEWAY, methodName, payload);
  const finalMessage = (jobId: string, timeoutMs?: number): Promise<McuFlashProgress> => finalProgressMessage(sink, jobId, timeoutMs);
  function request(jobId: string, image: Buffer, version: string): McuFlashRequest {
    images.set(`/${jobId}.bin`, image);
    return { schema: MCU_FLASH_SCHEMA, jobId, mcuId: MCU, image: { url: `${imageBase}/${jobId}.bin`, sha256: createHash('sha256').update(image).digest('base64'), sizeInBytes: image.length, version } };
  }
  const setMcu = (settings: Record<string, unknown>): Promise<unknown> =>
    hub.registry.updateModuleTwin(GATEWAY, 'serialTranslator', { properties: { desired: { mcus: { [MCU]: settings } } } }, '*');

  beforeAll(async () => {
    sink = await startEventGridSink();
    hub = await startEmulator({ eventGridWebhooks: [sink.url] });
    const server = createServer((req, res) => {
      const body = images.get(req.url ?? '');
      if (!body) res.writeHead(404).end();
      else res.writeHead(200, { 'content-length': body.length }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    imageBase = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    closeImageServer = () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    await hub.createDevice(GATEWAY, { edge: true });
    const generationId = (await deployModules(hub, GATEWAY, ['serialTranslator'], {
      mcuProgress: 'FROM /messages/modules/serialTranslator/outputs/mcuProgress INTO $upstream',
    })).serialTranslator ?? '';
    const { key } = await hub.createDevice(MCU, { parent: GATEWAY });
    stateDir = mkdtempSync(path.join(tmpdir(), 'serial-translator-qemu-'));
    const keysFile = path.join(stateDir, 'mcu-keys.json');
    writeFileSync(keysFile, JSON.stringify({ [MCU]: key }));
    ({ pty, dir: qemuDir } = await startQemuDeviceOnSocket());
    await setMcu({ port: pty.hostPath, baudRate: 115200, publicKey: publicPem, rebootTimeoutMs: 10_000 });
    translator = await startTranslatorProcess({
      hub: hub.hubProcess.info,
      deviceId: GATEWAY,
      generationId,
      env: { SERIAL_STATE_DIR: path.join(stateDir, 'state'), SERIAL_MCU_KEYS_FILE: keysFile },
    });
  }, 120_000);

  afterAll(async () => {
    await translator?.stop();
    await relay?.close();
    await stopAll();
    await closeImageServer?.();
    await hub?.stop();
    await sink?.close();
    if (qemuDir) rmSync(qemuDir, { recursive: true, force: true });
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  it('confirms a good update, reverts one that fails its health check, refuses a corrupted image', async () => {
    await eventually(async () => ((await reportedFirmware(hub, MCU)).currentFwVersion === '1.0.0' ? true : undefined), 20_000, 'MCU twin on 1.0.0');
    expect(await invoke('flashFirmware', request('q-good', imageOf('2.1.0', 24 * 1024), '2.1.0'))).toMatchObject({ status: 202 });
    expect(await finalMessage('q-good')).toMatchObject({ status: 'succeeded', runningVersion: '2.1.0' });

    expect(await invoke('flashFirmware', request('q-health', imageOf('2.2.0', 16 * 1024, HEALTH_FAIL_MARKER), '2.2.0'))).toMatchObject({ status: 202 });
    expect(await finalMessage('q-health')).toMatchObject({
      status: 'rolledBack',
      runningVersion: '2.1.0',
      extendedResultCode: resultCodes.MCU_HEALTH_ECHO_FAILED.extendedResultCode,
    });

    const corrupted = imageOf('2.3.0', 8 * 1024);
    corrupted[600]! ^= 1;
    expect(await invoke('flashFirmware', request('q-corrupted', corrupted, '2.3.0'))).toMatchObject({ status: 202 });
    expect(await finalMessage('q-corrupted')).toMatchObject({ status: 'refused', bytesSent: 0, extendedResultCode: resultCodes.MCU_IMAGE_HASH_MISMATCH.extendedResultCode });
    await eventually(async () => {
      const firmware = await reportedFirmware(hub, MCU);
      return firmware.currentFwVersion === '2.1.0' && firmware.fwUpdateStatus === 'error' ? true : undefined;
    }, 15_000, 'MCU twin on 2.1.0 after the refusal');
  }, 90_000);

  it('resumes after the cable to the emulated UART is pulled mid-upload', async () => {
    const image = imageOf('3.0.0', 96 * 1024);
    expect(await invoke('flashFirmware', request('q-pull', image, '3.0.0'))).toMatchObject({ status: 202 });
    const atPull = await eventually(async () => {
      const status = (await invoke('getFlashStatus', { jobId: 'q-pull' })).payload as McuFlashProgress;
      return status.phase === 'uploading' && (status.bytesSent ?? 0) > image.length / 4 ? status : undefined;
    }, 60_000, 'upload past a quarter');
    await pty.unplug();
    await new Promise((resolve) => setTimeout(resolve, 500));
    await pty.plug();
    const afterPlug: number[] = [];
    await eventually(async () => {
      const status = (await invoke('getFlashStatus', { jobId: 'q-pull' })).payload as McuFlashProgress;
      if (status.phase === 'uploading') afterPlug.push(status.bytesSent ?? 0);
      return status.status === 'inProgress' ? undefined : status;
    }, 90_000, 'q-pull to end');
    if (afterPlug.length > 0) expect(Math.min(...afterPlug)).toBeGreaterThanOrEqual(atPull.bytesSent!);
    expect(await finalMessage('q-pull')).toMatchObject({ status: 'succeeded', runningVersion: '3.0.0' });
    expect(translator!.lines.some((l) => l.includes(`MCU ${MCU}: link down`))).toBe(true);
  }, 150_000);

  it('moves to a tcp:// adapter whose line corrupts 1 byte in 1,000, and still flashes', async () => {
    relay = await startLineFaultRelay(pty.hostPath, { seed: 385, corrupt: 0.001 });
    await setMcu({ port: relay.url, smp: { retries: 6, timeoutMs: 1000 } });
    await translator!.waitForLine(new RegExp(`MCU ${MCU}: link up \\(tcp://`), 15_000);
    expect(await invoke('flashFirmware', request('q-noise', imageOf('3.1.0', 16 * 1024), '3.1.0'))).toMatchObject({ status: 202 });
    expect(await finalMessage('q-noise', 120_000)).toMatchObject({ status: 'succeeded', runningVersion: '3.1.0' });
    expect(relay.counts.corrupted).toBeGreaterThan(10);
    await eventually(async () => ((await reportedFirmware(hub, MCU)).currentFwVersion === '3.1.0' ? true : undefined), 15_000, 'MCU twin on 3.1.0');
  }, 150_000);
});
