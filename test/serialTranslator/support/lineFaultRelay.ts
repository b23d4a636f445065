import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { FaultyLink } from '../../../modules/serialTranslator/src/faultyLink.ts';
import type { FaultCounts } from '../../../modules/serialTranslator/src/faultyLink.ts';
import { SerialPortLink } from '../../../modules/serialTranslator/src/serialPortLink.ts';

/**
 * A serial-over-TCP adapter with a noisy line: a TCP port (what the module is configured with, tcp://...) bridged
 * to the device's pty, corrupting bytes in both directions at a seeded rate. The pty is opened on the first
 * connection, so the module can hand the port over from a direct pty link without two readers on one pty.
 */
export interface LineFaultRelay {
  readonly url: string;
  readonly counts: FaultCounts;
  close(): Promise<void>;
}

export async function startLineFaultRelay(ptyPath: string, options: { seed: number; corrupt: number }): Promise<LineFaultRelay> {
  let faulty: FaultyLink | undefined;
  let opening: Promise<FaultyLink> | undefined;
  const sockets = new Set<net.Socket>();
  const line = (): Promise<FaultyLink> =>
    (opening ??= SerialPortLink.open({ path: ptyPath, baudRate: 115200 }).then((serial) => {
      faulty = new FaultyLink(serial, { seed: options.seed, tx: { corrupt: options.corrupt }, rx: { corrupt: options.corrupt } });
      faulty.onData((bytes) => {
        for (const socket of sockets) socket.write(bytes);
      });
      return faulty;
    }));
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.pause();
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => sockets.delete(socket));
    void line().then(
      (link) => {
        socket.on('data', (bytes: Buffer) => void link.write(bytes).catch(() => undefined));
        socket.resume();
      },
      () => socket.destroy(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `tcp://127.0.0.1:${port}`,
    get counts() {
      return faulty?.counts ?? { dropped: 0, duplicated: 0, corrupted: 0 };
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await (await opening?.catch(() => undefined))?.close();
    },
  };
}
