/**
 * One flash per MCU at a time, any number of MCUs in parallel. A second job for a busy MCU waits its turn
 * rather than failing: it usually carries the same image and then finds it already installed.
 */
export class McuLocks {
  readonly #tails = new Map<string, Promise<void>>();

  isBusy(mcuId: string): boolean {
    return this.#tails.has(mcuId);
  }

  async run<T>(mcuId: string, job: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(mcuId) ?? Promise.resolve();
    let release!: () => void;
    const tail = new Promise<void>((resolve) => (release = resolve));
    const chained = previous.then(() => tail);
    this.#tails.set(mcuId, chained);
    await previous;
    try {
      return await job();
    } finally {
      release();
      if (this.#tails.get(mcuId) === chained) this.#tails.delete(mcuId);
    }
  }
}
