#!/usr/bin/env node
// In a source checkout the CLI runs from TypeScript through tsx; an installed build (no src/) runs the compiled JS.
import { existsSync } from 'node:fs';
import { URL } from 'node:url';

const source = new URL('../src/cli/main.ts', import.meta.url);
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import(new URL('../dist/src/cli/main.js', import.meta.url).href);
}
