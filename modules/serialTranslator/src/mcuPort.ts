import type { ByteLink } from './link.ts';
import { SerialPortLink } from './serialPortLink.ts';
import { SocketLink } from './socketLink.ts';
import type { McuPort } from './configuration.ts';

// The byte link of one configured MCU. An MCU that is unplugged when the module starts (or configured before it
// is plugged in) is opened as soon as it appears; once open, the link itself reopens its path after an unplug
// or a re-enumeration, so the same /dev/serial/by-id name keeps working.

export class McuPortLink {
  readonly port: McuPort;
  readonly baudRate: number;
  #link: ByteLink | undefined;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  #waiters = new Set<() => void>();
  readonly #onState: ((state: string) => void) | undefined;

  /** `onState` hears every change of `state` (opened, unplugged, back). */
  constructor(port: McuPort, baudRate: number, onState?: (state: string) => void) {
    this.port = port;
    this.baudRate = baudRate;
    this.#onState = onState;
    void this.#open(250);
  }

  /** 'up', 'down' (opened before, now gone) or 'absent' (never opened yet). */
  get state(): string {
    return this.#link ? this.#link.state : 'absent';
  }

  /** The link once it has been opened, waiting up to `timeoutMs` for it; undefined if it never appeared. */
  async ready(timeoutMs: number): Promise<ByteLink | undefined> {
    if (this.#link) return this.#link;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#waiters.add(done);
    });
    return this.#link;
  }

  async #open(delayMs: number): Promise<void> {
    if (this.#closed) return;
    try {
      const link =
        this.port.kind === 'serial'
          ? await SerialPortLink.open({ path: this.port.path, baudRate: this.baudRate }, 2000)
          : await SocketLink.connect(this.port.kind === 'tcp' ? { host: this.port.host, port: this.port.port } : { path: this.port.path }, 2000);
      if (this.#closed) {
        await link.close();
        return;
      }
      this.#link = link;
      const onState = this.#onState;
      if (onState) link.onState((state) => onState(state));
      onState?.('up');
      for (const waiter of [...this.#waiters]) waiter();
      this.#waiters.clear();
    } catch {
      // Not there yet: keep looking, backing off to once every 5 s.
      this.#timer = setTimeout(() => void this.#open(Math.min(delayMs * 2, 5000)), delayMs);
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    for (const waiter of [...this.#waiters]) waiter();
    await this.#link?.close();
  }
}
