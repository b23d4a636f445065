import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isOtaError, parseImportManifest, parseUpdateManifest } from '../src/index.ts';
import { sharedSchemasDir } from './sharedSchemas.ts';

const shared = sharedSchemasDir;
const examples = readdirSync(path.join(shared, 'examples')).filter((f) => f.includes('azure-deviceupdate'));

describe('SchemaStore examples for ADU manifests', () => {
  it('finds the examples', () => {
    expect(examples.length).toBeGreaterThanOrEqual(13);
  });

  for (const file of examples) {
    const negative = file.startsWith('negative_test__');
    const parse = file.includes('import-manifest') ? parseImportManifest : parseUpdateManifest;
    it(`${negative ? 'rejects' : 'accepts'} ${file}`, () => {
      const bytes = readFileSync(path.join(shared, 'examples', file));
      if (negative) {
        let caught: unknown;
        try {
          parse(bytes);
        } catch (error) {
          caught = error;
        }
        expect(isOtaError(caught), String(caught)).toBe(true);
        expect((caught as Error).message).toMatch(/\/\S*: .+\(rule: \w+\)/);
      } else {
        expect(() => parse(bytes)).not.toThrow();
      }
    });
  }

  it('ships schema copies identical to the shared originals', () => {
    const copies = new URL('../schemas/', import.meta.url);
    for (const file of readdirSync(copies).filter((f) => f.startsWith('azure-deviceupdate-'))) {
      expect(readFileSync(new URL(file, copies)).equals(readFileSync(path.join(shared, file))), file).toBe(true);
    }
  });
});
