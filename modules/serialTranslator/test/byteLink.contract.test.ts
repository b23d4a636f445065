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
import { SocketLink } from '../src/socketLink.ts';
import { MemoryLink } from '../src/memoryLink.ts';
import net from 'node:net';
import { PtyPair, stopAll } from './support/hostFirmware.ts';

interface Ends {
  link: ByteLink;
  peer: ByteLink;
}

const dirs: string[] = [];
const servers: net.Server[] = [];
afterAll(async () => {
  for (const server of servers) await new Promise((resolve) => server.close(resolve));
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
  ['SocketLink over TCP', async () => {
    // The peer is the accepted server-side socket, wrapped as a minimal link for the contract's other end.
    const server = net.createServer();
    servers.push(server);
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    const link = await SocketLink.connect({ host: '127.0.0.1', port });
    const socket = await accepted;
    const [peer, relay] = [new MemoryLink(), new MemoryLink()];
    peer.peer = relay;
    relay.peer = peer;
    relay.onData((bytes) => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => void relay.write(chunk));
    const close = peer.close.bind(peer);
    peer.close = async () => {
      socket.destroy();
      await close();
    };
    return { link, peer };
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

describe('SocketLink reconnects', () => {
  it('comes back up after the server drops the connection, with bounded backoff', async () => {
    const server = net.createServer();
    servers.push(server);
    const sockets: net.Socket[] = [];
    server.on('connection', (s) => sockets.push(s));
    const dir = mkdtempSync(path.join(tmpdir(), 'smp-sock-'));
    dirs.push(dir);
    const socketPath = path.join(dir, 'uart.sock');
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    const link = await SocketLink.connect({ path: socketPath, maxReconnectDelayMs: 100 });
    const states: string[] = [];
    link.onState((s) => states.push(s));
    for (let i = 0; i < 100 && sockets.length < 1; i++) await new Promise((resolve) => setTimeout(resolve, 5));
    sockets[0]!.destroy();
    for (let i = 0; i < 200 && !states.includes('down'); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    await link.whenUp(5000);
    expect(states).toEqual(['down', 'up']);
    expect(link.reconnectCount).toBeGreaterThan(0);
    const got = new Promise<Buffer>((resolve) => sockets[1]!.once('data', resolve));
    await link.write(Buffer.from('after\n'));
    expect((await got).toString()).toBe('after\n');
    await link.close();
  });
});
