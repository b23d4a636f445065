import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { OtaError } from '../errors.ts';
import { ProgressBar } from './output.ts';

/** Parsed command line flags, as node:util parseArgs returns them. */
export type Flags = Record<string, string | boolean | string[] | undefined>;

/** A repeatable flag's values (none, one or many). */
export function listFlag(value: unknown): string[] {
  return Array.isArray(value) ? (value as string[]) : typeof value === 'string' ? [value] : [];
}

/** --files takes files and directories (their regular files, not recursive); the key is the base name. */
export async function collectFiles(values: readonly string[]): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const add = (file: string): void => {
    const name = path.basename(file);
    if (files.has(name) && files.get(name) !== file) throw new OtaError('USAGE_ERROR', `--files: two files are named ${name}`);
    files.set(name, file);
  };
  for (const value of values) {
    const info = await stat(value).catch((cause: Error) => {
      throw new OtaError('IO_ERROR', `--files ${value}: ${cause.message}`, { cause });
    });
    if (info.isDirectory()) {
      for (const entry of await readdir(value, { withFileTypes: true })) if (entry.isFile()) add(path.join(value, entry.name));
    } else {
      add(value);
    }
  }
  return files;
}

/** sha256 (base64) and size of a file, streamed, with a progress bar on a terminal. */
export async function hashFile(file: string): Promise<{ sha256: string; size: number }> {
  const total = (await stat(file)).size;
  const hash = createHash('sha256');
  const bar = new ProgressBar(`hashing ${path.basename(file)}`);
  let done = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    bar.update(done, total);
  }
  bar.done();
  return { sha256: hash.digest('base64'), size: done };
}

/** "30d", "12h", "90m" or plain seconds. */
export function parseDuration(value: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(value);
  if (!match) throw new OtaError('USAGE_ERROR', `duration ${JSON.stringify(value)}: use a number with s, m, h or d`);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(match[1]) * unit * 1000;
}
