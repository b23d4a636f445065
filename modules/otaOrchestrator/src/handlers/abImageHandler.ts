import { OtaError, stepInstalledCriteria } from '@edge-ota/common';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { BootControl, Slot } from './bootControl.ts';
import { otherSlot } from './bootControl.ts';
import { describeExit, runCommand } from './command.ts';
import type { PhaseOutcome, StepContext, StepFile, UpdateHandler } from './updateHandler.ts';
import { done, failed } from './updateHandler.ts';

// `edge-ota/ab-image:1`: a whole root file system image written to the slot that is not running. handlerProperties:
// `{ "imageFileName": "rootfs.img", "installedCriteria": "...", "healthCheck": { "command": ["/usr/bin/check"],
// "timeoutSeconds": 60 } }` (all optional; imageFileName is needed only when the step has several files).
// install streams the image into the inactive slot and hashes it back from the slot; apply asks the bootloader to
// try the slot once and asks for a reboot; confirmBoot checks the new slot really booted; healthCheck runs the
// health command; commit marks the slot good. Rollback marks the new slot bad and makes the old one the default:
// if the new slot is running, the next boot (whoever causes it) starts the old one, and nothing tries again.

export interface AbImageHandlerOptions {
  /** Where each slot's image goes: block devices (/dev/mmcblk0p2) or plain files in tests. */
  slots: Record<Slot, string>;
  bootControl: BootControl;
  /** Keeps which version each slot holds (ab-slots.json); must survive reboots. */
  stateDir: string;
  /** The version in a slot nothing was recorded for (the factory image). */
  factoryVersion?: string;
  /** Used when a step names no healthCheck of its own. */
  healthCheck?: HealthCommand;
}

export interface HealthCommand {
  command: string[];
  timeoutSeconds?: number;
}

interface SlotRecord {
  version: string;
  installedCriteria?: string;
  sha256: string;
}

/** Which slot this step writes, fixed at the first install attempt so a resumed write goes to the same place. */
interface Plan {
  from: Slot;
  to: Slot;
}

export class AbImageHandler implements UpdateHandler {
  readonly ids = ['edge-ota/ab-image:1'];
  readonly needsLocalFiles = true;
  readonly #options: AbImageHandlerOptions;

  constructor(options: AbImageHandlerOptions) {
    this.#options = options;
  }

  async isInstalled(context: StepContext): Promise<boolean> {
    // Needs no file: the question is only what the running slot holds.
    const booted = await this.#options.bootControl.bootedSlot();
    const record = (await this.#records())[booted];
    const criteria = stepInstalledCriteria(context.step);
    if (criteria !== undefined) return record?.installedCriteria === criteria;
    return (record?.version ?? this.#options.factoryVersion) === context.updateId.version;
  }

  async install(context: StepContext): Promise<PhaseOutcome> {
    try {
      const image = imageFile(context);
      if (!image.path) throw new OtaError('INSTALL_FAILED', `image ${image.fileName} was not downloaded`);
      const plan = await this.#plan(context, true);
      if (plan.to === (await this.#options.bootControl.bootedSlot())) {
        throw new OtaError('INSTALL_FAILED', `refusing to write slot ${plan.to}: it is the slot running now`);
      }
      // The slot's old content is gone from the first byte written; forget its version before writing.
      await this.#record(plan.to, undefined);
      const target = this.#options.slots[plan.to];
      context.log(`writing ${image.fileName} (${image.sizeInBytes} bytes) to slot ${plan.to} (${target})`);
      if (await writeImage(image.path, target)) await dropCachedBlocks(target, context);
      const readBack = await hashPrefix(target, image.sizeInBytes);
      if (readBack !== image.sha256) {
        throw new OtaError('INSTALL_FAILED', `slot ${plan.to} (${target}) does not read back as the signed image: sha256 ${readBack} instead of ${image.sha256}`);
      }
      const criteria = stepInstalledCriteria(context.step);
      await this.#record(plan.to, { version: context.updateId.version, ...(criteria === undefined ? {} : { installedCriteria: criteria }), sha256: image.sha256 });
      context.log(`slot ${plan.to} verified by reading it back`);
      return done();
    } catch (error) {
      return failed(asOtaError(error, 'INSTALL_FAILED'));
    }
  }

  async apply(context: StepContext): Promise<PhaseOutcome> {
    try {
      const plan = await this.#plan(context, false);
      await this.#options.bootControl.setNextBoot(plan.to, { tryOnce: true });
      context.log(`slot ${plan.to} will be tried once at the next boot; slot ${plan.from} stays the default`);
      return { kind: 'reboot' };
    } catch (error) {
      return failed(asOtaError(error, 'APPLY_FAILED'));
    }
  }

  async confirmBoot(context: StepContext): Promise<PhaseOutcome> {
    try {
      const plan = await this.#plan(context, false);
      const booted = await this.#options.bootControl.bootedSlot();
      if (booted !== plan.to) {
        return failed(new OtaError('APPLY_FAILED', `the target booted slot ${booted}, not the new slot ${plan.to}: the bootloader fell back`));
      }
      context.log(`booted the new slot ${booted}`);
      return done(await this.#versionOf(booted));
    } catch (error) {
      return failed(asOtaError(error, 'APPLY_FAILED'));
    }
  }

  async healthCheck(context: StepContext): Promise<PhaseOutcome> {
    try {
      const check = healthCommand(context) ?? this.#options.healthCheck;
      if (!check) return done();
      const [file, ...args] = check.command;
      if (!file) throw new OtaError('HEALTH_CHECK_FAILED', 'healthCheck.command is empty');
      const result = await runCommand(file, args, { timeoutMs: (check.timeoutSeconds ?? 60) * 1000, log: context.log, signal: context.signal });
      if (result.timedOut) return failed(new OtaError('HEALTH_CHECK_TIMEOUT', `health check ${file} did not answer within ${check.timeoutSeconds ?? 60} s`));
      if (result.exitCode !== 0) return failed(new OtaError('HEALTH_CHECK_FAILED', `health check ${file} ended with ${describeExit(result)}: ${result.tail}`));
      return done();
    } catch (error) {
      return failed(asOtaError(error, 'HEALTH_CHECK_FAILED'));
    }
  }

  async commit(context: StepContext): Promise<PhaseOutcome> {
    try {
      const plan = await this.#plan(context, false);
      const booted = await this.#options.bootControl.bootedSlot();
      if (booted !== plan.to) throw new OtaError('APPLY_FAILED', `refusing to mark slot ${plan.to} good while slot ${booted} is running`);
      await this.#options.bootControl.markGood(plan.to);
      context.log(`slot ${plan.to} marked good`);
      return done(await this.#versionOf(plan.to));
    } catch (error) {
      return failed(asOtaError(error, 'APPLY_FAILED'));
    }
  }

  async rollback(context: StepContext): Promise<PhaseOutcome> {
    try {
      const plan = await this.#readPlan(context);
      if (!plan) return done(await this.#versionOf(await this.#options.bootControl.bootedSlot()));
      // Both calls only ever move the bootloader towards the old slot, so a second rollback changes nothing.
      await this.#options.bootControl.markBad(plan.to);
      await this.#options.bootControl.setNextBoot(plan.from, { tryOnce: false });
      const booted = await this.#options.bootControl.bootedSlot();
      const version = await this.#versionOf(plan.from);
      if (booted === plan.to) {
        // The bad slot is the one running: reboot into the old one (the engine does it after recording rolledBack).
        context.log(`slot ${plan.to} marked bad; rebooting into slot ${plan.from}`);
        return version ? { kind: 'reboot', installedVersion: version } : { kind: 'reboot' };
      }
      context.log(`slot ${plan.to} marked bad; slot ${plan.from} is running and stays the default`);
      return done(version);
    } catch (error) {
      return failed(new OtaError('ROLLBACK_FAILED', (error as Error).message, { cause: error }));
    }
  }

  async #plan(context: StepContext, create: boolean): Promise<Plan> {
    const existing = await this.#readPlan(context);
    if (existing) return existing;
    if (!create) throw new OtaError('APPLY_FAILED', 'no slot was written for this step');
    const from = await this.#options.bootControl.bootedSlot();
    const plan: Plan = { from, to: otherSlot(from) };
    await writeAtomic(path.join(context.workDir, 'ab-plan.json'), JSON.stringify(plan));
    return plan;
  }

  async #readPlan(context: StepContext): Promise<Plan | undefined> {
    try {
      return JSON.parse(await readFile(path.join(context.workDir, 'ab-plan.json'), 'utf8')) as Plan;
    } catch {
      return undefined;
    }
  }

  async #versionOf(slot: Slot): Promise<string | undefined> {
    return (await this.#records())[slot]?.version ?? this.#options.factoryVersion;
  }

  async #records(): Promise<Partial<Record<Slot, SlotRecord>>> {
    try {
      return JSON.parse(await readFile(path.join(this.#options.stateDir, 'ab-slots.json'), 'utf8')) as Partial<Record<Slot, SlotRecord>>;
    } catch {
      return {};
    }
  }

  async #record(slot: Slot, record: SlotRecord | undefined): Promise<void> {
    const records = await this.#records();
    if (record) records[slot] = record;
    else delete records[slot];
    await mkdir(this.#options.stateDir, { recursive: true });
    await writeAtomic(path.join(this.#options.stateDir, 'ab-slots.json'), JSON.stringify(records, null, 2));
  }
}

function imageFile(context: StepContext): StepFile {
  const name = context.step.handlerProperties?.imageFileName;
  const file = typeof name === 'string' ? context.files.find((f) => f.fileName === name) : context.files.length === 1 ? context.files[0] : undefined;
  if (!file) throw new OtaError('INSTALL_FAILED', `step ${context.stepIndex}: name the image with handlerProperties.imageFileName (one of the step's files)`);
  return file;
}

function healthCommand(context: StepContext): HealthCommand | undefined {
  const value = context.step.handlerProperties?.healthCheck;
  if (value === undefined) return undefined;
  const { command, timeoutSeconds } = (value ?? {}) as { command?: unknown; timeoutSeconds?: unknown };
  if (!Array.isArray(command) || !command.every((c) => typeof c === 'string') || command.length === 0) {
    throw new OtaError('HEALTH_CHECK_FAILED', 'handlerProperties.healthCheck.command must be a non-empty array of strings');
  }
  if (timeoutSeconds !== undefined && (typeof timeoutSeconds !== 'number' || !(timeoutSeconds > 0))) {
    throw new OtaError('HEALTH_CHECK_FAILED', 'handlerProperties.healthCheck.timeoutSeconds must be a positive number');
  }
  return { command: command, ...(timeoutSeconds === undefined ? {} : { timeoutSeconds }) };
}

/**
 * Streams the image into the slot and flushes it, so a power cut after install cannot leave it in the page cache.
 * Returns whether the slot is a block device.
 */
async function writeImage(source: string, target: string): Promise<boolean> {
  let isDevice = false;
  try {
    isDevice = (await stat(target)).isBlockDevice();
  } catch {
    // A plain file that does not exist yet (tests, image files on a data partition).
  }
  // A block device cannot be truncated or created; a plain file must not keep a longer old image's tail.
  await pipeline(createReadStream(source, { highWaterMark: 1024 * 1024 }), createWriteStream(target, { flags: isDevice ? 'r+' : 'w' }));
  const handle = await open(target, 'r+');
  try {
    await handle.sync();
  } catch (error) {
    // Character devices (and /dev/null) have nothing to flush; anything else is a failed write.
    if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
  } finally {
    await handle.close();
  }
  return isDevice;
}

/**
 * Reading a block device straight after writing it is served from the buffer cache, which proves little about
 * the flash. `blockdev --flushbufs` drops those buffers so the read-back comes from the device. Best effort:
 * without blockdev the read-back still catches a short or misdirected write.
 */
async function dropCachedBlocks(device: string, context: StepContext): Promise<void> {
  try {
    const result = await runCommand('blockdev', ['--flushbufs', device], { timeoutMs: 60_000, log: context.log });
    if (result.exitCode === 0) return;
    context.log(`blockdev --flushbufs ${device} ended with ${describeExit(result)}; the read-back may come from the cache`);
  } catch (error) {
    context.log(`cannot run blockdev (${(error as Error).message}); the read-back may come from the cache`);
  }
}

/** sha256 (base64) of the first `size` bytes: a partition is larger than the image written to it. */
async function hashPrefix(file: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  if (size > 0) {
    for await (const chunk of createReadStream(file, { start: 0, end: size - 1, highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) hash.update(chunk);
  }
  return hash.digest('base64');
}

async function writeAtomic(file: string, text: string): Promise<void> {
  await writeFile(`${file}.tmp`, text);
  await rename(`${file}.tmp`, file);
}

function asOtaError(error: unknown, code: 'INSTALL_FAILED' | 'APPLY_FAILED' | 'HEALTH_CHECK_FAILED'): OtaError {
  return error instanceof OtaError ? error : new OtaError(code, (error as Error).message, { cause: error });
}
