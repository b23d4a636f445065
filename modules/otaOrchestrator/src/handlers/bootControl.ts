import { readFile, rename, writeFile } from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describeExit, program, runCommand } from './command.ts';

// How the A/B image handler talks to a bootloader. Every implementation keeps the same promise: a slot set with
// `tryOnce` is booted once; unless the running system marks it good before the next boot, the bootloader goes
// back to the slot it booted before. That is what makes a kernel that never comes up roll back by itself.

export type Slot = 'A' | 'B';
export const slots: ReadonlyArray<Slot> = ['A', 'B'];

export function otherSlot(slot: Slot): Slot {
  return slot === 'A' ? 'B' : 'A';
}

export interface BootControl {
  /** The slot the bootloader starts when nothing else is asked (the committed one). */
  activeSlot(): Promise<Slot>;
  /** The slot the running system was started from. */
  bootedSlot(): Promise<Slot>;
  /** tryOnce: boot `slot` at the next boot only; otherwise make it the default. */
  setNextBoot(slot: Slot, options: { tryOnce: boolean }): Promise<void>;
  /** The running slot works: it becomes the default. */
  markGood(slot: Slot): Promise<void>;
  /** Never boot `slot` again until new content is written and tried; the default moves off it. */
  markBad(slot: Slot): Promise<void>;
}

function asSlot(value: string | undefined, what: string): Slot {
  if (value === 'A' || value === 'B') return value;
  throw new Error(`${what} is ${value === undefined ? 'not set' : `"${value}"`}, expected A or B`);
}

/** Reads `key=A` from a kernel command line (GRUB and U-Boot menu entries pass the slot to the kernel this way). */
export async function slotFromCommandLine(file: string, key: string): Promise<Slot> {
  const words = (await readFile(file, 'utf8')).trim().split(/\s+/);
  const word = words.find((w) => w.startsWith(`${key}=`));
  return asSlot(word?.slice(key.length + 1), `${key} on the kernel command line (${file})`);
}

// --- FileBootControl --------------------------------------------------------------------------------------------

interface FileBootState {
  defaultSlot: Slot;
  tryOnce: Slot | null;
  booted: Slot;
  good: Slot[];
  bad: Slot[];
  boots: number;
}

/**
 * Boot control kept in a JSON file, for development machines and tests, which also plays the bootloader:
 * `boot()` is the power-on. It starts the try-once slot if one is set and clears the request at once (as GRUB's
 * next_entry or U-Boot's bootcount do); otherwise it starts the default slot. So a new slot that is not marked
 * good before the following `boot()` is left behind: the fallback. The module's start-up calls `boot()` before
 * the engine resumes jobs; a test calls it to "reboot" between two engines on one state directory.
 */
export class FileBootControl implements BootControl {
  readonly #file: string;
  readonly #initialSlot: Slot;

  constructor(stateFile: string, options: { initialSlot?: Slot } = {}) {
    this.#file = stateFile;
    this.#initialSlot = options.initialSlot ?? 'A';
  }

  /** Simulated power-on; returns the slot it started. */
  async boot(): Promise<Slot> {
    const state = await this.#read();
    const tried = state.tryOnce;
    state.booted = tried && !state.bad.includes(tried) ? tried : state.defaultSlot;
    state.tryOnce = null;
    state.boots += 1;
    await this.#write(state);
    return state.booted;
  }

  /** The whole state, for tests and diagnostics. */
  async state(): Promise<Readonly<FileBootState>> {
    return this.#read();
  }

  async activeSlot(): Promise<Slot> {
    return (await this.#read()).defaultSlot;
  }

  async bootedSlot(): Promise<Slot> {
    return (await this.#read()).booted;
  }

  async setNextBoot(slot: Slot, options: { tryOnce: boolean }): Promise<void> {
    const state = await this.#read();
    if (options.tryOnce) {
      // New content in the slot: whatever was known about the old content no longer holds.
      state.tryOnce = slot;
      state.good = state.good.filter((s) => s !== slot);
      state.bad = state.bad.filter((s) => s !== slot);
    } else {
      state.defaultSlot = slot;
      state.tryOnce = null;
    }
    await this.#write(state);
  }

  async markGood(slot: Slot): Promise<void> {
    const state = await this.#read();
    state.defaultSlot = slot;
    if (state.tryOnce === slot) state.tryOnce = null;
    state.good = [...new Set([...state.good, slot])].sort();
    state.bad = state.bad.filter((s) => s !== slot);
    await this.#write(state);
  }

  async markBad(slot: Slot): Promise<void> {
    const state = await this.#read();
    if (state.tryOnce === slot) state.tryOnce = null;
    if (state.defaultSlot === slot) state.defaultSlot = otherSlot(slot);
    state.bad = [...new Set([...state.bad, slot])].sort();
    state.good = state.good.filter((s) => s !== slot);
    await this.#write(state);
  }

  async #read(): Promise<FileBootState> {
    let text: string;
    try {
      text = await readFile(this.#file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      // A device fresh from the factory: one slot, booted and good.
      return { defaultSlot: this.#initialSlot, tryOnce: null, booted: this.#initialSlot, good: [this.#initialSlot], bad: [], boots: 0 };
    }
    return JSON.parse(text) as FileBootState;
  }

  async #write(state: FileBootState): Promise<void> {
    await writeFile(`${this.#file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
    await rename(`${this.#file}.tmp`, this.#file);
  }
}

// --- GRUB ----------------------------------------------------------------------------------------------------------

export interface GrubEnvBootControlOptions {
  /** The grubenv file, e.g. /boot/grub/grubenv (or /boot/efi/EFI/<os>/grubenv). */
  envFile: string;
  /** Directory holding grub-editenv; unset means PATH. */
  binDir?: string;
  /** Menu entry ids of the two slots. */
  entries?: Record<Slot, string>;
  /** Each menu entry passes `<key>=A|B` to the kernel; that is how the running system knows its slot. */
  cmdlineFile?: string;
  cmdlineKey?: string;
  timeoutSeconds?: number;
}

/**
 * GRUB through grub-editenv. The default is `saved_entry` (grub.cfg: `set default="${saved_entry}"`); a try-once
 * boot is `next_entry`, which the stock grub.cfg (00_header) loads, boots and clears before the kernel starts, so
 * a new slot that hangs or panics comes back on the saved entry at the next boot. `edgeota_slot_<X>=good|bad` records
 * the verdicts for people and scripts reading the environment.
 */
export class GrubEnvBootControl implements BootControl {
  readonly #options: Required<Omit<GrubEnvBootControlOptions, 'binDir'>> & { binDir: string | undefined };

  constructor(options: GrubEnvBootControlOptions) {
    this.#options = {
      envFile: options.envFile,
      binDir: options.binDir,
      entries: options.entries ?? { A: 'edge-ota-A', B: 'edge-ota-B' },
      cmdlineFile: options.cmdlineFile ?? '/proc/cmdline',
      cmdlineKey: options.cmdlineKey ?? 'edgeota.slot',
      timeoutSeconds: options.timeoutSeconds ?? 30,
    };
  }

  async activeSlot(): Promise<Slot> {
    const saved = (await this.#list()).saved_entry;
    const slot = slots.find((s) => this.#options.entries[s] === saved);
    if (!slot) throw new Error(`grubenv saved_entry "${saved ?? ''}" is neither slot entry (${Object.values(this.#options.entries).join(', ')})`);
    return slot;
  }

  bootedSlot(): Promise<Slot> {
    return slotFromCommandLine(this.#options.cmdlineFile, this.#options.cmdlineKey);
  }

  async setNextBoot(slot: Slot, options: { tryOnce: boolean }): Promise<void> {
    if (options.tryOnce) {
      await this.#editenv(['set', `next_entry=${this.#options.entries[slot]}`, `edgeota_slot_${slot}=trying`]);
    } else {
      await this.#editenv(['set', `saved_entry=${this.#options.entries[slot]}`]);
      await this.#editenv(['unset', 'next_entry']);
    }
  }

  async markGood(slot: Slot): Promise<void> {
    await this.#editenv(['set', `saved_entry=${this.#options.entries[slot]}`, `edgeota_slot_${slot}=good`]);
  }

  async markBad(slot: Slot): Promise<void> {
    const env = await this.#list();
    await this.#editenv(['set', `edgeota_slot_${slot}=bad`, ...(env.saved_entry === this.#options.entries[slot] ? [`saved_entry=${this.#options.entries[otherSlot(slot)]}`] : [])]);
    if (env.next_entry === this.#options.entries[slot]) await this.#editenv(['unset', 'next_entry']);
  }

  async #list(): Promise<Record<string, string>> {
    return parseAssignments(await this.#editenv(['list']));
  }

  async #editenv(args: string[]): Promise<string> {
    const result = await runCommand(program('grub-editenv', this.#options.binDir), [this.#options.envFile, ...args], { timeoutMs: this.#options.timeoutSeconds * 1000 });
    if (result.exitCode !== 0) throw new Error(`grub-editenv ${args[0] ?? ''} ended with ${describeExit(result)}: ${result.tail}`);
    return result.stdout;
  }
}

// --- U-Boot --------------------------------------------------------------------------------------------------------

export interface UbootEnvBootControlOptions {
  /** Directory holding fw_printenv and fw_setenv; unset means PATH. */
  binDir?: string;
  /** fw_env.config to pass with -c; unset uses the tools' default (/etc/fw_env.config). */
  configFile?: string;
  /** The variable that names the slot to boot, and its values per slot. */
  slotVariable?: string;
  values?: Record<Slot, string>;
  /** When set, the booted slot comes from the kernel command line instead of the environment. */
  cmdlineFile?: string;
  cmdlineKey?: string;
  timeoutSeconds?: number;
}

/**
 * U-Boot through fw_printenv/fw_setenv, with the usual A/B convention: `boot_part` names the slot, and a try is
 * `upgrade_available=1 bootcount=0`. U-Boot counts boots while upgrade_available is set and, past `bootlimit`, runs
 * `altbootcmd`, which switches boot_part back and saves the environment; so after a fallback the environment names
 * the slot that really booted. markGood clears upgrade_available. All changes go in one `fw_setenv -s` script so
 * the environment (with its redundant copy) never holds half of them.
 */
export class UbootEnvBootControl implements BootControl {
  readonly #binDir: string | undefined;
  readonly #configArgs: string[];
  readonly #variable: string;
  readonly #values: Record<Slot, string>;
  readonly #cmdline: { file: string; key: string } | undefined;
  readonly #timeoutMs: number;

  constructor(options: UbootEnvBootControlOptions = {}) {
    this.#binDir = options.binDir;
    this.#configArgs = options.configFile ? ['-c', options.configFile] : [];
    this.#variable = options.slotVariable ?? 'boot_part';
    this.#values = options.values ?? { A: 'A', B: 'B' };
    this.#cmdline = options.cmdlineFile ? { file: options.cmdlineFile, key: options.cmdlineKey ?? 'edgeota.slot' } : undefined;
    this.#timeoutMs = (options.timeoutSeconds ?? 30) * 1000;
  }

  async activeSlot(): Promise<Slot> {
    const env = await this.#printenv();
    const named = this.#slotOf(env[this.#variable]);
    // During a try boot_part already names the new slot; the committed one is the slot altbootcmd goes back to.
    return env.upgrade_available === '1' ? otherSlot(named) : named;
  }

  async bootedSlot(): Promise<Slot> {
    if (this.#cmdline) return slotFromCommandLine(this.#cmdline.file, this.#cmdline.key);
    return this.#slotOf((await this.#printenv())[this.#variable]);
  }

  async setNextBoot(slot: Slot, options: { tryOnce: boolean }): Promise<void> {
    await this.#setenv({ [this.#variable]: this.#values[slot], upgrade_available: options.tryOnce ? '1' : '0', bootcount: '0' });
  }

  async markGood(slot: Slot): Promise<void> {
    await this.#setenv({ [this.#variable]: this.#values[slot], upgrade_available: '0', bootcount: '0' });
  }

  async markBad(slot: Slot): Promise<void> {
    const env = await this.#printenv();
    await this.#setenv({
      ...(env[this.#variable] === this.#values[slot] ? { [this.#variable]: this.#values[otherSlot(slot)] } : {}),
      upgrade_available: '0',
      bootcount: '0',
    });
  }

  #slotOf(value: string | undefined): Slot {
    const slot = slots.find((s) => this.#values[s] === value);
    if (!slot) throw new Error(`U-Boot ${this.#variable} is "${value ?? ''}", neither ${this.#values.A} nor ${this.#values.B}`);
    return slot;
  }

  async #printenv(): Promise<Record<string, string>> {
    const result = await runCommand(program('fw_printenv', this.#binDir), this.#configArgs, { timeoutMs: this.#timeoutMs });
    if (result.exitCode !== 0) throw new Error(`fw_printenv ended with ${describeExit(result)}: ${result.tail}`);
    return parseAssignments(result.stdout);
  }

  async #setenv(values: Record<string, string>): Promise<void> {
    const dir = await mkdtemp(path.join(tmpdir(), 'fw-setenv-'));
    try {
      const script = path.join(dir, 'script');
      await writeFile(script, Object.entries(values).map(([k, v]) => `${k} ${v}\n`).join(''));
      const result = await runCommand(program('fw_setenv', this.#binDir), [...this.#configArgs, '-s', script], { timeoutMs: this.#timeoutMs });
      if (result.exitCode !== 0) throw new Error(`fw_setenv ended with ${describeExit(result)}: ${result.tail}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

function parseAssignments(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0 && !line.startsWith('#')) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}
