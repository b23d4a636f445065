// One contract, every ByteLink implementation: bytes arrive complete and in order, writes resolve, and a
// closed link says so instead of swallowing writes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LinkDownError } from '../src/link.ts';
import type { ByteLink } from '../src/link.ts';
import { memoryLinkPair } from '../src/memoryLink.ts';
import { PacedLink } from '../src/pacedLink.ts';
import { FaultyLink } from '../src/faultyLink.ts';
import { SerialPortLink } from '../src/serialPortLink.ts';
import { PtyPair, stopAll } from './support/hostFirmware.ts';

interface Ends {
  link: ByteLink;
  peer: ByteLink;
}

const dirs: string[] = [];
afterAll(async () => {
  await stopAll();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const implementations: [string, () => Promise<Ends>][] = [
  ['MemoryLink', () => {
    const [link, peer] = memoryLinkPair();
    return Promise.resolve({ link, peer });
  }],
  ['PacedLink', () => {
    const [inner, peer] = memoryLinkPair();
    return Promise.resolve({ link: new PacedLink(inner, { baud: 2_000_000 }), peer });
  }],
  ['FaultyLink without faults', () => {
    const [inner, peer] = memoryLinkPair();
    return Promise.resolve({ link: new FaultyLink(inner, { seed: 1 }), peer });
  }],
  ['SerialPortLink on a pty', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'smp-link-'));
    dirs.push(dir);
    const pty = new PtyPair(dir);
    await pty.plug();
    const link = await SerialPortLink.open({ path: pty.hostPath, baudRate: 115200 });
    const peer = await SerialPortLink.open({ path: pty.devicePath, baudRate: 115200 });
    return { link, peer };
  }],
];

async function receive(link: ByteLink, count: number): Promise<number[]> {
  const got: number[] = [];
  const off = link.onData((bytes) => got.push(...bytes));
  for (let i = 0; i < 500 && got.length < count; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  off();
  return got;
}

describe.each(implementations)('ByteLink contract: %s', (_name, make) => {
  it('carries bytes both ways, complete and in order', async () => {
    const { link, peer } = await make();
    expect(link.state).toBe('up');
    await link.whenUp(100);
    // Newline-terminated, because the serial port link hands data on in whole lines.
    const there = Buffer.from('\x06\x09hello from the gateway\n');
    const back = Buffer.from('[00:01] <inf> log line from the mcu\n');
    const arriving = receive(peer, there.length);
    await link.write(there);
    expect(Buffer.from(await arriving)).toEqual(there);
    const returning = receive(link, back.length);
    await peer.write(back);
    expect(Buffer.from(await returning)).toEqual(back);
    await peer.close();
    await link.close();
  });

  it('refuses writes once closed and reports it', async () => {
    const { link, peer } = await make();
    const states: string[] = [];
    link.onState((s) => states.push(s));
    await link.close();
    expect(link.state).toBe('closed');
    expect(states).toEqual(['closed']);
    await expect(link.write(Uint8Array.of(1))).rejects.toBeInstanceOf(LinkDownError);
    await expect(link.whenUp(50)).rejects.toBeInstanceOf(LinkDownError);
    await peer.close();
  });
});
