// Base64 flavours used by the formats: JWS uses base64url without padding, ADU's file hashes use standard base64.
const BASE64URL = /^[A-Za-z0-9_-]*$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function base64url(data: Uint8Array | string): string {
  return Buffer.from(data).toString('base64url');
}

/** Strict: Buffer.from silently skips invalid characters, which would let two spellings verify as one. */
export function decodeBase64url(text: string): Buffer | undefined {
  if (!BASE64URL.test(text) || text.length % 4 === 1) return undefined;
  return Buffer.from(text, 'base64url');
}

export function decodeBase64(text: string): Buffer | undefined {
  if (!BASE64.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

/** ADU's producers are not consistent about the alphabet of a hash; the bytes are what must agree. */
export function decodeAnyBase64(text: string): Buffer | undefined {
  return decodeBase64(text) ?? decodeBase64url(text.replace(/=+$/, ''));
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
