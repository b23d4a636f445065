// Starts the real thing for integration tests and the bench: the firmware sample built for the host, talking
// on one end of a socat pty pair, with the other end for the SMP client. Every process started here is
// tracked and stopped by stopAll().
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIRMWARE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../firmware-samples/smp-server');

export function buildHostFirmware(): string {
  execFileSync('make', ['-s', '-C', FIRMWARE_DIR, 'host'], { stdio: 'pipe' });
  return path.join(FIRMWARE_DIR, 'build/host/smp-server');
}

export function buildQemuFirmware(): string {
  execFileSync('make', ['-s', '-C', FIRMWARE_DIR, 'qemu'], { stdio: 'pipe' });
  return path.join(FIRMWARE_DIR, 'build/qemu/smp-server.elf');
}

const children = new Set<ChildProcess>();

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(timer);
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].map(stop));
}

export async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export class PtyPair {
  readonly hostPath: string;
  readonly devicePath: string;
  readonly #deviceSocket: string | undefined;
  #socat: ChildProcess | undefined;

  /** With `deviceSocket`, the device end is a UNIX socket (QEMU's UART chardev) instead of a second pty. */
  constructor(dir: string, deviceSocket?: string) {
    this.hostPath = path.join(dir, 'host-tty');
    this.devicePath = deviceSocket ?? path.join(dir, 'device-tty');
    this.#deviceSocket = deviceSocket;
  }

  /** (Re)creates the pair: the host symlink points at a fresh pty, as after re-plugging a USB serial adapter. */
  async plug(): Promise<void> {
    const device = this.#deviceSocket ? `UNIX-CONNECT:${this.#deviceSocket}` : `pty,raw,echo=0,link=${this.devicePath}`;
    this.#socat = track(spawn('socat', [`pty,raw,echo=0,link=${this.hostPath}`, device], { stdio: 'ignore' }));
    await waitFor(() => existsSync(this.hostPath) && existsSync(this.devicePath), 'socat ptys');
  }

  /** Kills socat: both ptys hang up and their links disappear, like pulling the cable. */
  async unplug(): Promise<void> {
    if (this.#socat) await stop(this.#socat);
    this.#socat = undefined;
    await waitFor(() => !existsSync(this.hostPath), 'socat to remove its links', 2000).catch(() => {
      rmSync(this.hostPath, { force: true });
      if (!this.#deviceSocket) rmSync(this.devicePath, { force: true });
    });
  }
}

export interface HostDevice {
  dir: string;
  pty: PtyPair;
  firmware: ChildProcess;
  storage: string;
}

export interface HostDeviceOptions {
  eraseMs?: number;
  factoryVersion?: string;
  bufSize?: number;
  bufCount?: number;
}

export async function startHostDevice(options: HostDeviceOptions = {}): Promise<HostDevice> {
  const binary = buildHostFirmware();
  const dir = mkdtempSync(path.join(tmpdir(), 'smp-host-'));
  const pty = new PtyPair(dir);
  await pty.plug();
  const storage = path.join(dir, 'slots.bin');
  const args = ['--port', pty.devicePath, '--storage', storage];
  if (options.eraseMs) args.push('--erase-ms', String(options.eraseMs));
  if (options.factoryVersion) args.push('--factory-version', options.factoryVersion);
  if (options.bufSize) args.push('--buf-size', String(options.bufSize));
  if (options.bufCount) args.push('--buf-count', String(options.bufCount));
  const firmware = track(spawn(binary, args, { stdio: ['ignore', 'ignore', 'inherit'] }));
  return { dir, pty, firmware, storage };
}

/**
 * The firmware under qemu-system-arm with UART0 on a UNIX socket, and socat making that socket a pty, so the
 * "cable" between QEMU and the gateway can be pulled and re-plugged like the host device's.
 */
export async function startQemuDeviceOnSocket(): Promise<{ qemu: ChildProcess; pty: PtyPair; dir: string }> {
  const elf = buildQemuFirmware();
  const dir = mkdtempSync(path.join(tmpdir(), 'smp-qemu-'));
  const socket = path.join(dir, 'uart0.sock');
  const qemu = track(
    spawn(
      'qemu-system-arm',
      ['-M', 'mps2-an385', '-display', 'none', '-monitor', 'none', '-kernel', elf,
        '-chardev', `socket,id=uart0,path=${socket},server=on,wait=off`, '-serial', 'chardev:uart0'],
      { stdio: 'ignore' },
    ),
  );
  await waitFor(() => existsSync(socket) || qemu.exitCode !== null, 'QEMU to listen on its UART socket');
  const pty = new PtyPair(dir, socket);
  await pty.plug();
  return { qemu, pty, dir };
}

/** The firmware under qemu-system-arm (mps2-an385); resolves with the pty QEMU attached UART0 to. */
export async function startQemuDevice(): Promise<{ qemu: ChildProcess; ptyPath: string }> {
  const elf = buildQemuFirmware();
  const qemu = track(
    spawn('qemu-system-arm', ['-M', 'mps2-an385', '-display', 'none', '-monitor', 'none', '-kernel', elf, '-serial', 'pty'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  let output = '';
  qemu.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  qemu.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  await waitFor(() => /\/dev\/pts\/\d+/.test(output) || qemu.exitCode !== null, 'QEMU to attach its UART to a pty');
  const ptyPath = /\/dev\/pts\/\d+/.exec(output)?.[0];
  if (!ptyPath) throw new Error(`QEMU did not start: ${output}`);
  return { qemu, ptyPath };
}
