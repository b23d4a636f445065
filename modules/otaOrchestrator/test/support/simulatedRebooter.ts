import type { Rebooter } from '../../src/updateEngine.ts';

// A rebooter for tests of updates that need a reboot. A real reboot never returns, and the engine relies on that:
// a reboot() that returns at once makes it enter awaitingReboot again and ask again, forever. So reboot() here
// records the request and stays pending until the test "pulls the power": it stops the engine first and only
// then lets the call return, so the engine cannot go on in the old process.

export class SimulatedRebooter implements Rebooter {
  readonly requests: string[] = [];
  #pending: Array<() => void> = [];

  reboot(reason: string): Promise<void> {
    this.requests.push(reason);
    return new Promise((resolve) => this.#pending.push(resolve));
  }

  /** Waits (bounded) until `count` reboots were asked for. */
  async requested(count: number, timeoutMs = 20_000): Promise<void> {
    for (let waited = 0; this.requests.length < count; waited += 10) {
      if (waited >= timeoutMs) throw new Error(`waited ${timeoutMs} ms for reboot request ${count}; got ${this.requests.length}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Ends the old process: stop it (engine.stop() marks it stopped synchronously), then let reboot() return. */
  async powerOff(stop: () => Promise<void>): Promise<void> {
    const stopping = stop();
    for (const resolve of this.#pending.splice(0)) resolve();
    await stopping;
  }
}
