import { randomBytes } from 'node:crypto';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PipelinedFileWriter } from '../src/pipelinedFileWriter.ts';

// The writer on real files: what lands where (page-cache and O_DIRECT descriptors), the pause it asks for when
// the thread pool falls behind, and a write that fails.

const kib = 1024;
let dir: string;
const fds: number[] = [];

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'pipelined-writer-'));
});

afterEach(() => {
  for (const fd of fds.splice(0)) closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

function openFile(name: string, flags: number): number {
  const fd = openSync(path.join(dir, name), flags, 0o600);
  fds.push(fd);
  return fd;
}

/** Pushes `data` in pieces of the given sizes, honouring every pause, then closes. */
async function pushAll(writer: PipelinedFileWriter, data: Buffer, pieces: number[]): Promise<void> {
  let at = 0;
  let i = 0;
  while (at < data.length) {
    const size = Math.min(pieces[i++ % pieces.length] ?? 1, data.length - at);
    const pause = writer.push(data.subarray(at, at + size));
    at += size;
    if (pause) await pause;
  }
  await writer.close();
}

const directSupported = ((): boolean => {
  const probe = mkdtempSync(path.join(tmpdir(), 'pipelined-writer-probe-'));
  try {
    closeSync(openSync(path.join(probe, 'f'), constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT));
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
})();

describe('PipelinedFileWriter through the page cache', () => {
  it('writes every byte in order, whatever the piece sizes, from the given position on', async () => {
    const prefix = randomBytes(1000);
    writeFileSync(path.join(dir, 'f'), prefix);
    const data = randomBytes(3 * 64 * kib + 12_345);
    const fd = openFile('f', constants.O_WRONLY);
    const writer = new PipelinedFileWriter({ fd, position: prefix.length }, { bufferBytes: 64 * kib, buffers: 3, headroomBytes: 16 * kib });
    await pushAll(writer, data, [1, 7_000, 16 * kib, 333]);
    expect(writer.writtenBytes).toBe(data.length);
    expect(readFileSync(path.join(dir, 'f')).equals(Buffer.concat([prefix, data]))).toBe(true);
  });

  it('asks for a pause when less than the headroom is free, and lets go once a write has freed a buffer', async () => {
    const fd = openFile('f', constants.O_WRONLY | constants.O_CREAT);
    const writer = new PipelinedFileWriter({ fd, position: 0 }, { bufferBytes: 64 * kib, buffers: 2, headroomBytes: 64 * kib });
    // The first buffer fills and goes to the thread pool; the second is whole: room for one more read.
    expect(writer.push(randomBytes(64 * kib))).toBeUndefined();
    const pause = writer.push(randomBytes(1));
    expect(pause).toBeInstanceOf(Promise);
    await pause;
    expect(writer.writtenBytes).toBe(64 * kib);
    await writer.close();
    expect(writer.writtenBytes).toBe(64 * kib + 1);
  });

  it('refuses a push past the headroom by a caller that ignored the pause', () => {
    const fd = openFile('f', constants.O_WRONLY | constants.O_CREAT);
    const writer = new PipelinedFileWriter({ fd, position: 0 }, { bufferBytes: 64 * kib, buffers: 2, headroomBytes: 64 * kib });
    expect(() => writer.push(randomBytes(3 * 64 * kib))).toThrow(/past the headroom/);
  });

  it('fails the pause, the close and every later push with the error of a write that failed', async () => {
    writeFileSync(path.join(dir, 'f'), '');
    const fd = openFile('f', constants.O_RDONLY);
    const writer = new PipelinedFileWriter({ fd, position: 0 }, { bufferBytes: 64 * kib, buffers: 2, headroomBytes: 64 * kib });
    expect(writer.push(randomBytes(64 * kib))).toBeUndefined();
    await expect(writer.push(randomBytes(10))).rejects.toMatchObject({ code: 'EBADF', syscall: 'write' });
    expect(() => writer.push(randomBytes(1))).toThrow(expect.objectContaining({ code: 'EBADF' }) as Error);
    await expect(writer.close()).rejects.toMatchObject({ code: 'EBADF' });
    expect(writer.writtenBytes).toBe(0);
  });

  it('refuses buffers it cannot align or pause with', () => {
    expect(() => new PipelinedFileWriter({ fd: 0, position: 0 }, { bufferBytes: 1000, buffers: 4 })).toThrow(RangeError);
    expect(() => new PipelinedFileWriter({ fd: 0, position: 0 }, { bufferBytes: 64 * kib, buffers: 1 })).toThrow(RangeError);
    expect(() => new PipelinedFileWriter({ fd: 0, position: 0 }, { bufferBytes: 64 * kib, buffers: 2, headroomBytes: 128 * kib })).toThrow(RangeError);
  });
});

describe.runIf(directSupported)('PipelinedFileWriter with an O_DIRECT descriptor', () => {
  it('sends whole aligned blocks to the direct descriptor and an unaligned start and end to the ordinary one', async () => {
    // Two different files stand in for the two descriptors of one file, so each byte shows which way it went.
    const start = 10_000;
    const data = randomBytes(5 * 64 * kib + 777);
    const ordinary = openFile('ordinary', constants.O_WRONLY | constants.O_CREAT);
    const direct = openFile('direct', constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT);
    const writer = new PipelinedFileWriter({ fd: ordinary, position: start, direct: { fd: direct, alignment: 4096 } }, { bufferBytes: 64 * kib, buffers: 3, headroomBytes: 64 * kib });
    await pushAll(writer, data, [5_000, 64 * kib, 1]);
    const headEnd = 4096 * Math.ceil(start / 4096);
    const tailStart = start + data.length - ((start + data.length - headEnd) % 4096);
    const viaOrdinary = readFileSync(path.join(dir, 'ordinary'));
    const viaDirect = readFileSync(path.join(dir, 'direct'));
    expect(viaOrdinary.subarray(start, headEnd).equals(data.subarray(0, headEnd - start))).toBe(true);
    expect(viaOrdinary.subarray(tailStart).equals(data.subarray(tailStart - start))).toBe(true);
    expect(viaDirect.length).toBe(tailStart);
    expect(viaDirect.subarray(headEnd, tailStart).equals(data.subarray(headEnd - start, tailStart - start))).toBe(true);
    expect(viaOrdinary.subarray(headEnd, tailStart).every((b) => b === 0)).toBe(true);
  });

  it('writes a file that reads back exactly when both descriptors are the same file', async () => {
    const prefix = randomBytes(1_000_001);
    writeFileSync(path.join(dir, 'f'), prefix);
    const data = randomBytes(2 * 1024 * kib + 4097);
    const ordinary = openFile('f', constants.O_WRONLY);
    const direct = openFile('f', constants.O_WRONLY | constants.O_DIRECT);
    const writer = new PipelinedFileWriter({ fd: ordinary, position: prefix.length, direct: { fd: direct, alignment: 4096 } });
    await pushAll(writer, data, [128 * kib, 100_000]);
    expect(writer.writtenBytes).toBe(data.length);
    expect(readFileSync(path.join(dir, 'f')).equals(Buffer.concat([prefix, data]))).toBe(true);
  });
});
