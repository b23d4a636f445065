import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { FaultyLink } from '../../../modules/serialTranslator/src/faultyLink.ts';
import type { FaultCounts } from '../../../modules/serialTranslator/src/faultyLink.ts';
import { SerialPortLink } from '../../../modules/serialTranslator/src/serialPortLink.ts';

/**
 * A serial-over-TCP adapter with a noisy line: a TCP port (what the module is configured with, tcp://...) bridged
 * to the device's pty, corrupting bytes in both directions at a seeded rate.
 */
export interface LineFaultRelay {
  readonly url: string;
  readonly counts: FaultCounts;
  close(): Promise<void>;
}

export async function startLineFaultRelay(ptyPath: string, options: { seed: number; corrupt: number }): Promise<LineFaultRelay> {
  const serial = await SerialPortLink.open({ path: ptyPath, baudRate: 115200 });
  const faulty = new FaultyLink(serial, { seed: options.seed, tx: { corrupt: options.corrupt }, rx: { corrupt: options.corrupt } });
  const sockets = new Set<net.Socket>();
  faulty.onData((bytes) => {
    for (const socket of sockets) socket.write(bytes);
  });
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('data', (bytes: Buffer) => void faulty.write(bytes).catch(() => undefined));
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `tcp://127.0.0.1:${port}`,
    get counts() {
      return faulty.counts;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await faulty.close();
    },
  };
}
