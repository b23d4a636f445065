import { OtaError } from '../errors.ts';
import type { CompatibilityInfo } from '../manifest/types.ts';

/**
 * The first compatibility entry whose every property the device has with the same value, or an error that
 * lists what each entry wanted. Names and values compare case-insensitively, as the ADU agent does.
 */
export function matchCompatibility(compatibility: readonly CompatibilityInfo[], device: Readonly<Record<string, string>>): CompatibilityInfo {
  const deviceProps = new Map(Object.entries(device).map(([k, v]) => [k.toLowerCase(), v.toLowerCase()]));
  const reasons: string[] = [];
  for (const [i, entry] of compatibility.entries()) {
    const mismatch = Object.entries(entry).find(([key, value]) => deviceProps.get(key.toLowerCase()) !== value.toLowerCase());
    if (!mismatch) return entry;
    const [key, value] = mismatch;
    reasons.push(`entry ${i} wants ${key}=${JSON.stringify(value)}, device has ${JSON.stringify(device[key] ?? deviceProps.get(key.toLowerCase()) ?? null)}`);
  }
  throw new OtaError('INCOMPATIBLE_DEVICE', `/compatibility: no entry matches the device (${reasons.join('; ')})`, { field: '/compatibility' });
}
