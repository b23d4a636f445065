// Per-child bearer tokens derived from one shared secret, so a parent needs no per-child configuration.
import { createHmac, timingSafeEqual } from 'node:crypto';

const CONTEXT = 'edge-ota content-cache child v1\n';

function mac(secret: string, deviceId: string): string {
  return createHmac('sha256', secret).update(CONTEXT + deviceId).digest('base64url');
}

/** `<deviceId>.<base64url HMAC-SHA256(secret, context + deviceId)>`; sent as `Authorization: Bearer <token>`. */
export function deriveChildToken(secret: string, deviceId: string): string {
  if (deviceId.length === 0) throw new Error('device id is empty');
  return `${deviceId}.${mac(secret, deviceId)}`;
}

/** The device id the token was issued to, or undefined. base64url has no '.', so the last one separates. */
export function verifyChildToken(secret: string, token: string): string | undefined {
  const dot = token.lastIndexOf('.');
  if (dot <= 0) return undefined;
  const deviceId = token.slice(0, dot);
  const presented = Buffer.from(token.slice(dot + 1));
  const expected = Buffer.from(mac(secret, deviceId));
  return presented.length === expected.length && timingSafeEqual(presented, expected) ? deviceId : undefined;
}

export function bearerToken(header: string | undefined): string | undefined {
  const m = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
