import type { InlineStep } from '@edge-ota/common';
import { existsSync, readFileSync } from 'node:fs';
import type { PayloadFile } from './composedUpdates.ts';

// Script steps whose every action can be counted: each script appends `<name> <action>` to a log file, so a test
// sees which steps ran, in what order, and that none ran twice.

/** A script that appends `<name> <action>` to `log`, then runs `extra`. */
export function loggingScript(id: string, name: string, log: string, extra = ''): PayloadFile {
  return { id, name, data: Buffer.from(`#!/bin/sh\necho "${name} $1" >> ${log}\n${extra}exit 0\n`) };
}

/** A step that runs `file` with the script handler (ours by default; `microsoft/script:1` is ADU's id for it). */
export function scriptStep(file: PayloadFile, handler = 'edge-ota/script:1'): InlineStep {
  return { handler, files: [file.id], handlerProperties: { scriptFileName: file.name } };
}

/** The lines a logging script wrote, none when it never ran. */
export function logLines(log: string): string[] {
  return existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
}
