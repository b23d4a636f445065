import type { FeedbackMessage } from '@edge-ota/common';
import type { JobStore } from './jobStore.ts';

// Sends queued feedback in order and deletes each message only after edgeHub acknowledged it (edgeHub then stores
// and forwards it to the cloud). While the module cannot reach edgeHub, messages stay in SQLite and sending is
// retried with backoff; a restart picks up where it stopped. Ids (`<jobId>/<sequence>`) let the dispatcher drop
// the rare duplicate of a message acknowledged just before a crash.

export type SendFeedback = (message: FeedbackMessage) => Promise<void>;

export class FeedbackOutbox {
  readonly #store: JobStore;
  readonly #send: SendFeedback;
  readonly #log: (line: string) => void;
  readonly #maxBackoffMs: number;
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #wake: (() => void) | undefined;

  constructor(store: JobStore, send: SendFeedback, options: { log?: (line: string) => void; maxBackoffMs?: number } = {}) {
    this.#store = store;
    this.#send = send;
    this.#log = options.log ?? (() => undefined);
    this.#maxBackoffMs = options.maxBackoffMs ?? 30_000;
  }

  /** Something was queued (or the link came back): send what is pending. */
  kick(): void {
    if (this.#stopped) return;
    this.#wake?.();
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#drain().finally(() => {
      this.#running = undefined;
      if (this.#again && !this.#stopped) {
        this.#again = false;
        this.kick();
      }
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#running;
  }

  /** Resolves when nothing is pending (tests). */
  async flushed(): Promise<void> {
    while (!this.#stopped && (this.#running || this.#store.outboxSize() > 0)) {
      this.kick();
      await this.#running;
    }
  }

  async #drain(): Promise<void> {
    let failures = 0;
    while (!this.#stopped) {
      const batch = this.#store.pendingFeedback(50);
      if (batch.length === 0) return;
      for (const entry of batch) {
        try {
          await this.#send(entry.message);
          this.#store.acknowledgeFeedback(entry.seq);
          failures = 0;
        } catch (error) {
          failures += 1;
          const delay = Math.min(this.#maxBackoffMs, 250 * 2 ** Math.min(failures, 10));
          if (failures === 1) this.#log(`feedback not sent (${(error as Error).message}); ${this.#store.outboxSize()} queued, retrying`);
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, delay);
            this.#wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.#wake = undefined;
          break;
        }
      }
    }
  }
}
