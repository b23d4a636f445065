import { existsSync } from 'node:fs';

/**
 * The package's own schemas/ folder, found from the calling module's URL: the same code runs from src/ (tsx)
 * and from dist/src/ (compiled), which sit at different depths below the package root.
 */
export function packageSchemasDir(from: string): URL {
  let dir = new URL('.', from);
  for (let depth = 0; depth < 6; depth += 1) {
    const candidate = new URL('schemas/', dir);
    if (existsSync(new URL('package.json', dir)) && existsSync(candidate)) return candidate;
    dir = new URL('..', dir);
  }
  throw new Error(`@edge-ota/common: no schemas/ folder above ${from}`);
}
