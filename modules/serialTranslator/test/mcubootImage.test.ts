import { createHash, generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { McubootImageError, TLV, formatVersion, parseMcubootImage, verifyMcubootImage } from '../src/mcubootImage.ts';
import { buildMcubootImage, parseVersion } from '../src/mcubootImageBuilder.ts';

const keys = {
  ed25519: generateKeyPairSync('ed25519'),
  'ecdsa-p256': generateKeyPairSync('ec', { namedCurve: 'prime256v1' }),
  'rsa-2048-pss': generateKeyPairSync('rsa', { modulusLength: 2048 }),
} as const;
const payload = new Uint8Array(5000).map((_, i) => (i * 31) & 0xff);

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof McubootImageError) return error.code;
    throw error;
  }
  return 'accepted';
}

describe('MCUboot image layout', () => {
  it('writes the header fields where design.md puts them', () => {
    const image = buildMcubootImage({ payload, version: '1.2.3.4', headerSize: 0x200, loadAddr: 0x1000 });
    const h = Buffer.from(image.subarray(0, 32));
    // magic 0x96f3b83d LE, load addr, hdr size 0x0200, protected TLV size 0, img size 5000 = 0x1388, flags 0,
    // version 1.2.3 build 4, pad.
    expect(h.toString('hex')).toBe('3db8f396' + '00100000' + '0002' + '0000' + '88130000' + '00000000' + '0102' + '0300' + '04000000' + '00000000');
    // TLV info: magic 0x6907, total 4 + (4 + 32) with only the SHA-256 TLV (type 0x0010, len 0x0020).
    const tlv = Buffer.from(image.subarray(0x200 + 5000));
    expect(tlv.subarray(0, 8).toString('hex')).toBe('0769' + '2800' + '1000' + '2000');
    expect(tlv.subarray(8)).toEqual(createHash('sha256').update(image.subarray(0, 0x200 + 5000)).digest());
    const parsed = parseMcubootImage(image);
    expect(formatVersion(parsed.version)).toBe('1.2.3.4');
    expect(parsed.totalLength).toBe(image.length);
  });

  it('covers the protected TLV area with the hash', () => {
    const image = buildMcubootImage({ payload, version: '2.0.0', protectedTlvs: [{ type: 0x50, value: Uint8Array.of(1, 0, 0, 0) }] });
    const parsed = parseMcubootImage(image);
    expect(parsed.protectedTlvSize).toBe(12);
    expect(parsed.hashedLength).toBe(0x200 + 5000 + 12);
    expect(verifyMcubootImage(image).version).toBe('2.0.0');
  });

  it('parses versions strictly', () => {
    expect(parseVersion('1.2.3')).toEqual({ major: 1, minor: 2, revision: 3, build: 0 });
    expect(() => parseVersion('1.x')).toThrow(RangeError);
    expect(() => parseVersion('256.0.0')).toThrow(RangeError);
  });
});

describe.each(Object.keys(keys) as (keyof typeof keys)[])('%s signatures', (type) => {
  const { privateKey, publicKey } = keys[type];
  const image = buildMcubootImage({ payload, version: '1.0.1', signingKey: privateKey });

  it('verifies against the configured key', () => {
    const verified = verifyMcubootImage(image, { publicKey });
    expect(verified.signatureType).toBe(type);
    expect(verified.version).toBe('1.0.1');
    expect(parseMcubootImage(image).tlvs.map((t) => t.type)).toContain(TLV.keyHash);
  });

  it('refuses a flipped payload byte (hash)', () => {
    const bad = Uint8Array.from(image);
    bad[0x200 + 100]! ^= 1;
    expect(refusal(() => verifyMcubootImage(bad, { publicKey }))).toBe('image-hash-mismatch');
  });

  it('refuses an image signed for another key (key hash)', () => {
    const other: KeyObject = generateKeyPairSync('ed25519').publicKey;
    expect(refusal(() => verifyMcubootImage(image, { publicKey: other }))).toBe('image-key-mismatch');
  });

  it('refuses a forged signature when no key hash points at the wrong key', () => {
    const forger = type === 'ed25519' ? generateKeyPairSync('ed25519') : type === 'ecdsa-p256' ? generateKeyPairSync('ec', { namedCurve: 'prime256v1' }) : generateKeyPairSync('rsa', { modulusLength: 2048 });
    const forged = buildMcubootImage({ payload, version: '1.0.1', signingKey: forger.privateKey, omitKeyHash: true });
    expect(refusal(() => verifyMcubootImage(forged, { publicKey }))).toBe('image-bad-signature');
  });

  it('refuses an unsigned image when a key is configured', () => {
    const unsigned = buildMcubootImage({ payload, version: '1.0.1' });
    expect(refusal(() => verifyMcubootImage(unsigned, { publicKey }))).toBe('image-no-signature');
  });
});

describe('structural refusals', () => {
  const image = buildMcubootImage({ payload, version: '1.0.0' });
  it('refuses bad magic, truncation, trailing bytes, oversize and a version mismatch', () => {
    const noMagic = Uint8Array.from(image);
    noMagic[0] = 0;
    expect(refusal(() => verifyMcubootImage(noMagic))).toBe('image-bad-magic');
    expect(refusal(() => verifyMcubootImage(image.subarray(0, 0x200 + 10)))).toBe('image-truncated');
    expect(refusal(() => verifyMcubootImage(Buffer.concat([image, Buffer.alloc(1)])))).toBe('image-bad-tlv');
    expect(refusal(() => verifyMcubootImage(image, { maxSize: 1024 }))).toBe('image-too-large');
    expect(refusal(() => verifyMcubootImage(image, { expectedVersion: '1.0.1' }))).toBe('image-version-mismatch');
    expect(refusal(() => verifyMcubootImage(new Uint8Array(4)))).toBe('image-truncated');
  });
});

describe('result codes', () => {
  it('are unique and packed as facility mcu (0x5) / component / code', async () => {
    const { SERIAL_RESULT_CODES } = await import('../src/resultCodes.ts');
    const values = Object.values(SERIAL_RESULT_CODES);
    expect(new Set(values).size).toBe(values.length);
    expect(SERIAL_RESULT_CODES['image-hash-mismatch']).toBe(0x50300106);
    expect(SERIAL_RESULT_CODES['health-echo-failed']).toBe(0x50400105);
    for (const v of values) expect(v >>> 28).toBe(0x5);
  });
});
