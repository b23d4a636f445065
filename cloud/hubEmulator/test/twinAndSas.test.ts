import { describe, expect, it } from 'vitest';
import { HubError } from '../src/hubError.ts';
import { createSasToken, parseSasToken, verifySasToken } from '../src/sharedAccessSignature.ts';
import { mergePatch, validateTwinPatch } from '../src/twinDocument.ts';

describe('twin patches', () => {
  it('merges objects, replaces scalars and arrays, deletes on null', () => {
    const before = { a: 1, nested: { keep: true, drop: 'x' }, list: [1, 2] };
    expect(mergePatch(before, { a: 2, nested: { drop: null, add: 'y' }, list: [3] })).toEqual({ a: 2, nested: { keep: true, add: 'y' }, list: [3] });
    expect(before.nested.drop).toBe('x');
  });

  it('ignores $-metadata in patches and validates keys, values and depth', () => {
    expect(validateTwinPatch('desired', { $version: 4, $metadata: {}, a: 1 })).toEqual({ a: 1 });
    for (const bad of [{ 'a b': 1 }, { 'a.b': 1 }, { a: { $x: 1 } }, { '': 1 }, { a: 'x'.repeat(4097) }, { a: [1, null] }, { a: Infinity }]) {
      expect(() => validateTwinPatch('reported', bad)).toThrow(HubError);
    }
    expect(() => validateTwinPatch('tags', [1, 2])).toThrow(/must be a JSON object/);
  });
});

describe('SAS tokens', () => {
  const key = Buffer.alloc(32, 3).toString('base64');
  const future = Math.floor(Date.now() / 1000) + 600;

  it('round-trips and grants the resource and everything below it', () => {
    const token = parseSasToken(createSasToken('hub/devices/d1', key, future));
    expect(() => verifySasToken(token, [key], 'hub/devices/d1')).not.toThrow();
    expect(() => verifySasToken(token, [key], 'hub/devices/d1/modules/m')).not.toThrow();
    expect(() => verifySasToken(token, [key], 'hub/devices/d10')).toThrow(/does not grant/);
  });

  it('rejects a wrong key, an expired token and malformed tokens', () => {
    const other = Buffer.alloc(32, 4).toString('base64');
    expect(() => verifySasToken(parseSasToken(createSasToken('hub', key, future)), [other], 'hub')).toThrow(/signature/);
    expect(() => verifySasToken(parseSasToken(createSasToken('hub', key, 1000)), [key], 'hub')).toThrow(/expired/);
    for (const bad of ['', 'Bearer x', 'SharedAccessSignature sr=a&sig=b', 'SharedAccessSignature sr=a&sig=b&se=soon', 'SharedAccessSignature sr=%E0%A4%A&sig=b&se=1']) {
      expect(() => parseSasToken(bad)).toThrow(HubError);
    }
  });
});
