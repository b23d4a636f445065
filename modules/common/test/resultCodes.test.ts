import { describe, expect, it } from 'vitest';
import {
  OtaError,
  RESULT_FAILURE,
  describeExtendedResultCode,
  facilities,
  makeExtendedResultCode,
  resultCodeTable,
  resultCodes,
  splitExtendedResultCode,
} from '../src/index.ts';

describe('result codes', () => {
  const rows = resultCodeTable();

  it('has unique names and unique extended codes for failures', () => {
    expect(new Set(rows.map((r) => r.name)).size).toBe(rows.length);
    const failures = rows.filter((r) => r.resultCode === RESULT_FAILURE);
    expect(new Set(failures.map((r) => r.extendedResultCode)).size).toBe(failures.length);
    expect(failures.every((r) => r.extendedResultCode !== 0)).toBe(true);
  });

  it('packs facility / component / code in ADU layout (4 / 8 / 20 bits)', () => {
    expect(makeExtendedResultCode(0x8, 0x12, 0x34567)).toBe(0x81234567);
    expect(splitExtendedResultCode(0x81234567)).toEqual({ facility: 0x8, component: 0x12, code: 0x34567 });
    for (const row of rows.filter((r) => r.resultCode === RESULT_FAILURE)) {
      const parts = splitExtendedResultCode(row.extendedResultCode);
      expect(parts).toEqual({ facility: facilities[row.facility!], component: row.component, code: row.code });
      expect(row.extendedResultCode).toBeLessThanOrEqual(0xffffffff);
    }
    expect(() => makeExtendedResultCode(16, 0, 0)).toThrow(RangeError);
    expect(() => makeExtendedResultCode(1, 256, 0)).toThrow(RangeError);
    expect(() => makeExtendedResultCode(1, 0, 0x100000)).toThrow(RangeError);
  });

  it('gives every code a one-line meaning', () => {
    for (const row of rows) expect(row.meaning).toMatch(/^[A-Z].{10,140}\.$/);
  });

  it('covers what the other components will report', () => {
    for (const name of [
      'DOWNLOAD_HTTP_ERROR', 'DOWNLOAD_TRUNCATED', 'DOWNLOAD_HASH_MISMATCH', 'DOWNLOAD_DISK_FULL', 'INSTALL_FAILED', 'APPLY_FAILED',
      'HEALTH_CHECK_FAILED', 'ROLLBACK_PERFORMED', 'CANCELLED', 'MCU_TIMEOUT', 'MCU_DEVICE_ERROR', 'MCU_IMAGE_INVALID',
      'MCU_IMAGE_SIGNATURE_INVALID', 'CACHE_CONTENT_MISMATCH', 'SIGNING_KEY_DISABLED', 'ROOT_KEY_UNKNOWN',
    ]) {
      expect(Object.hasOwn(resultCodes, name), name).toBe(true);
    }
  });

  it('finds a definition from a reported number and puts it on errors', () => {
    const error = new OtaError('MANIFEST_EXPIRED', 'x', { field: '/edgeOta/expiresDateTime' });
    expect(error.extendedResultCode).toBe(resultCodes.MANIFEST_EXPIRED.extendedResultCode);
    expect(describeExtendedResultCode(error.extendedResultCode)?.name).toBe('MANIFEST_EXPIRED');
    expect(describeExtendedResultCode(0)).toBeUndefined();
    expect(error.toJSON()).toMatchObject({ code: 'MANIFEST_EXPIRED', resultCode: 0, field: '/edgeOta/expiresDateTime' });
  });
});

describe('result code docs', () => {
  it('docs/result-codes.md is the generated table', async () => {
    const { readFileSync } = await import('node:fs');
    const { resultCodeMarkdown } = await import('../src/index.ts');
    // Regenerate with: npx tsx -e "import {resultCodeMarkdown} from './src/index.ts'; process.stdout.write(resultCodeMarkdown())" > docs/result-codes.md
    expect(readFileSync(new URL('../docs/result-codes.md', import.meta.url), 'utf8')).toBe(resultCodeMarkdown());
  });
});
