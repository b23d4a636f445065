import { describe, expect, it } from 'vitest';
import {
  MAX_DELIVERY_FILE_URLS,
  MAX_FEEDBACK_BYTES,
  fitsInTwin,
  isOtaError,
  isTerminalFeedback,
  parseFeedbackMessage,
  parseMcuFlashProgress,
  parseMcuFlashRequest,
  parseUpdateDelivery,
} from '../src/index.ts';
import type { FeedbackMessage, UpdateDelivery } from '../src/index.ts';

const feedback: FeedbackMessage = {
  schema: 'edge-ota/feedback/1',
  messageId: 'job-1/3',
  jobId: 'job-1',
  sequence: 3,
  gatewayId: 'gw',
  deviceId: 'mcu-7',
  updateId: { provider: 'contoso', name: 'sensor-fw', version: '1.2.0' },
  step: 'download',
  status: 'progress',
  progress: { doneBytes: 10, totalBytes: 100, fileId: 'f1' },
  resultCode: 0,
  extendedResultCode: 0,
  timestamp: '2026-11-22T06:00:00.000Z',
};

const expectCode = (fn: () => unknown, code: string, field?: RegExp): void => {
  try {
    fn();
  } catch (error) {
    expect(isOtaError(error)).toBe(true);
    expect((error as { code: string }).code).toBe(code);
    if (field) expect((error as Error).message).toMatch(field);
    return;
  }
  throw new Error('expected a rejection');
};

describe('feedback contract', () => {
  it('accepts a valid message and tells terminal ones apart', () => {
    expect(parseFeedbackMessage(JSON.stringify(feedback))).toEqual(feedback);
    expect(isTerminalFeedback(feedback)).toBe(false);
    expect(isTerminalFeedback({ step: 'job', status: 'rolledBack' })).toBe(true);
  });

  it.each([
    ['not JSON', '{', /not JSON/],
    ['wrong schema', { ...feedback, schema: 'other' }, /\/schema/],
    ['unknown property', { ...feedback, extra: 1 }, /unknown property extra/],
    ['missing jobId', { ...feedback, jobId: undefined }, /missing jobId/],
    ['bad step', { ...feedback, step: 'format' }, /\/step/],
    ['negative sequence', { ...feedback, sequence: -1, messageId: 'job-1/-1' }, /\/sequence/],
    ['id not jobId/sequence', { ...feedback, messageId: 'job-1/4' }, /\/messageId/],
    ['bad timestamp', { ...feedback, timestamp: 'yesterday' }, /\/timestamp/],
    ['code out of 32 bits', { ...feedback, extendedResultCode: 2 ** 32 }, /\/extendedResultCode/],
    ['oversized', { ...feedback, resultDetails: 'x'.repeat(MAX_FEEDBACK_BYTES) }, /exceeds/],
  ])('rejects %s with FEEDBACK_INVALID naming the field', (_name, value, field) => {
    expectCode(() => parseFeedbackMessage(typeof value === 'string' ? value : JSON.stringify(value)), 'FEEDBACK_INVALID', field);
  });
});

describe('update delivery contract', () => {
  const delivery: UpdateDelivery = {
    workflow: { action: 3, id: 'job-1' },
    updateManifest: '{}',
    updateManifestSignature: 'a.b.c',
    fileUrls: { f1: 'http://cache/f1' },
    target: { deviceId: 'mcu-7' },
  };

  it('accepts a delivery and tells whether it fits a twin', () => {
    expect(parseUpdateDelivery(delivery)).toEqual(delivery);
    expect(fitsInTwin(delivery)).toBe(true);
    expect(fitsInTwin({ ...delivery, updateManifest: 'x'.repeat(5000) })).toBe(false);
  });

  it('takes MAX_DELIVERY_FILE_URLS file URLs and refuses one more', () => {
    const urls = (n: number): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`file${i}`, `http://cache/${i}`]));
    expect(parseUpdateDelivery({ ...delivery, fileUrls: urls(MAX_DELIVERY_FILE_URLS) }).fileUrls).toHaveProperty(`file${MAX_DELIVERY_FILE_URLS - 1}`);
    expectCode(() => parseUpdateDelivery({ ...delivery, fileUrls: urls(MAX_DELIVERY_FILE_URLS + 1) }), 'UPDATE_DELIVERY_INVALID', /\/fileUrls/);
  });

  it.each([
    ['unknown action', { ...delivery, workflow: { action: 4, id: 'j' } }, /\/workflow\/action/],
    ['job id with a slash', { ...delivery, workflow: { action: 3, id: 'a/b' } }, /\/workflow\/id/],
    ['no signature', { ...delivery, updateManifestSignature: undefined }, /missing updateManifestSignature/],
    ['URL not a string', { ...delivery, fileUrls: { f1: 7 } }, /\/fileUrls\/f1/],
    ['not an object', 'apply', /\(root\)/],
  ])('rejects %s', (_name, value, field) => {
    expectCode(() => parseUpdateDelivery(value), 'UPDATE_DELIVERY_INVALID', field);
  });
});

describe('MCU flash contract', () => {
  const request = {
    schema: 'edge-ota/mcu-flash/1',
    jobId: 'job-1',
    mcuId: 'mcu-7',
    image: { url: 'http://contentCache:8080/sha256/ab', sha256: 'A'.repeat(43) + '=', sizeInBytes: 65536, version: '1.2.0+7' },
  };

  it('accepts a request and a progress report', () => {
    expect(parseMcuFlashRequest(request).image.version).toBe('1.2.0+7');
    expect(parseMcuFlashProgress({ schema: 'edge-ota/mcu-flash/1', jobId: 'job-1', mcuId: 'mcu-7', phase: 'uploading', status: 'inProgress', bytesSent: 10, totalBytes: 20 }).phase).toBe('uploading');
  });

  it.each([
    ['bad hash', { ...request, image: { ...request.image, sha256: 'abc' } }, /\/image\/sha256/],
    ['bad version', { ...request, image: { ...request.image, version: 'v1' } }, /\/image\/version/],
    ['image too large', { ...request, image: { ...request.image, sizeInBytes: 2 ** 30 } }, /\/image\/sizeInBytes/],
  ])('rejects %s', (_name, value, field) => {
    expectCode(() => parseMcuFlashRequest(value), 'MCU_FLASH_REQUEST_INVALID', field);
  });
});
