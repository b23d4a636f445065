// How the CLI talks: human lines on stdout by default, one JSON document with --json, progress on stderr
// only when stderr is a terminal (so pipes and CI logs stay clean).

export class CommandOutput {
  readonly json: boolean;
  #lines: string[] = [];

  constructor(json: boolean) {
    this.json = json;
  }

  line(text: string): void {
    if (!this.json) this.#lines.push(text);
  }

  /** Ends the command: in JSON mode `result` is the document, otherwise the collected lines are printed. */
  finish(result: Record<string, unknown>): void {
    process.stdout.write(this.json ? `${JSON.stringify(result, null, 2)}\n` : this.#lines.map((l) => `${l}\n`).join(''));
  }
}

export class ProgressBar {
  readonly #label: string;
  readonly #enabled: boolean;
  #lastDraw = 0;
  #started = process.hrtime.bigint();

  constructor(label: string, stream: NodeJS.WriteStream = process.stderr) {
    this.#label = label;
    this.#enabled = stream.isTTY === true;
  }

  update(done: number, total: number): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (now - this.#lastDraw < 100 && done < total) return;
    this.#lastDraw = now;
    const width = 30;
    const fraction = total === 0 ? 1 : Math.min(1, done / total);
    const seconds = Number(process.hrtime.bigint() - this.#started) / 1e9;
    const rate = seconds > 0 ? done / 1024 / 1024 / seconds : 0;
    const bar = '#'.repeat(Math.round(fraction * width)).padEnd(width, '.');
    process.stderr.write(`\r${this.#label} [${bar}] ${(fraction * 100).toFixed(0).padStart(3)}% ${rate.toFixed(0)} MiB/s`);
  }

  done(): void {
    if (this.#enabled) process.stderr.write('\n');
  }
}
