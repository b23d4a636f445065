// `npm run bench -- serial [--baud 115200] [--kib 256] [--buf-size 2048] [--buf-count 2] [--window N]`: uploads an MCUboot image to the host-built firmware
// sample over a socat pty pair paced in both directions like a UART at the given baud rate (8N1), and compares
// the effective payload rate with the ceiling of the SMP console framing on that line.
//
// Ceiling: a line carries at most 127 bytes (2 marker + 124 base64 + newline) for 93 raw bytes, and a UART at
// B baud 8N1 moves B/10 bytes per second, so no SMP client can exceed (B/10) * 93/127 raw bytes per second.
// That bound ignores the SMP header, CBOR keys, length and CRC, so it is the strict one to measure against.
import { generateKeyPairSync } from 'node:crypto';
import { rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  MAX_LINE_BYTES,
  PacedLink,
  RAW_PER_LINE,
  SerialPortLink,
  SmpClient,
  buildMcubootImage,
  consoleFrameBytes,
  maxChunkData,
  readParams,
  uploadImage,
} from '../../modules/serialTranslator/src/index.ts';
import { startHostDevice, stopAll } from '../../modules/serialTranslator/test/support/hostFirmware.ts';

function option(args: string[], name: string, fallback: number): number;
function option(args: string[], name: string, fallback: undefined): number | undefined;
function option(args: string[], name: string, fallback: number | undefined): number | undefined {
  const at = args.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} needs a positive number`);
  return value;
}

/** An image of exactly `bytes` bytes: the payload is sized after measuring the header and TLV overhead. */
function imageOfSize(bytes: number): Uint8Array {
  const { privateKey } = generateKeyPairSync('ed25519');
  const payloadOf = (n: number) => new Uint8Array(n).map((_, i) => (i * 7919) & 0xff);
  const overhead = buildMcubootImage({ payload: payloadOf(0), version: '9.9.9', signingKey: privateKey }).length;
  return buildMcubootImage({ payload: payloadOf(bytes - overhead), version: '9.9.9', signingKey: privateKey });
}

export async function main(args: string[]): Promise<void> {
  const baud = option(args, 'baud', 115200);
  const kib = option(args, 'kib', 256);
  const image = imageOfSize(kib * 1024);
  const device = await startHostDevice({ bufSize: option(args, 'buf-size', 2048), bufCount: option(args, 'buf-count', 2) });
  let link: SerialPortLink | undefined;
  try {
    link = await SerialPortLink.open({ path: device.pty.hostPath, baudRate: baud });
    const paced = new PacedLink(link, { baud, bitsPerByte: 10 });
    const client = new SmpClient(paced);
    const { bufSize, bufCount } = await readParams(client);
    // The same default as FlashFlow: as many chunks in flight as the device has buffers, at most 4.
    const window = option(args, 'window', undefined) ?? Math.min(bufCount, 4);

    const started = performance.now();
    const result = await uploadImage(client, image, { bufSize, window });
    const seconds = (performance.now() - started) / 1000;
    client.close();

    const lineBytesPerSecond = baud / 10;
    const ceiling = (lineBytesPerSecond * RAW_PER_LINE) / MAX_LINE_BYTES / 1024;
    // For reference: the best an upload can do with this device's buf_size, counting every byte of each request.
    const chunk = maxChunkData(bufSize, { off: image.length });
    const protocolCeiling = ((lineBytesPerSecond * chunk) / consoleFrameBytes(bufSize)) / 1024;
    const effective = image.length / 1024 / seconds;
    const ratio = effective / ceiling;

    process.stdout.write(
      [
        `image: ${kib} KiB (${image.length} bytes), line: ${baud} baud 8N1 paced in both directions, device buf_size ${bufSize} buf_count ${bufCount}, window ${window}`,
        `upload: ${seconds.toFixed(2)} s in ${result.requests} requests, ${result.retries} retries`,
        `effective: ${effective.toFixed(2)} KiB/s`,
        `framing ceiling: ${ceiling.toFixed(2)} KiB/s  = (${baud}/10) * ${RAW_PER_LINE}/${MAX_LINE_BYTES} / 1024`,
        `protocol ceiling with ${chunk}-byte chunks: ${protocolCeiling.toFixed(2)} KiB/s`,
        `ratio to framing ceiling: ${(ratio * 100).toFixed(1)} % (target >= 85 %)`,
        '',
      ].join('\n'),
    );
    process.stdout.write(
      JSON.stringify({
        image_kib: kib,
        baud,
        buf_size_bytes: bufSize,
        window_count: window,
        upload_s: Number(seconds.toFixed(3)),
        requests_count: result.requests,
        retries_count: result.retries,
        effective_kib_per_s: Number(effective.toFixed(3)),
        ceiling_kib_per_s: Number(ceiling.toFixed(3)),
        protocol_ceiling_kib_per_s: Number(protocolCeiling.toFixed(3)),
        ratio: Number(ratio.toFixed(3)),
      }) + '\n',
    );
  } finally {
    await link?.close();
    await stopAll();
    rmSync(device.dir, { recursive: true, force: true });
  }
}
