import { createHmac, timingSafeEqual } from 'node:crypto';
import { unauthorized } from './hubError.ts';

// SAS tokens exactly as IoT Hub defines them:
// `SharedAccessSignature sr=<url-encoded resource>&sig=<url-encoded base64 HMAC>&se=<expiry>[&skn=<policy>]`
// where the signed string is `<url-encoded resource>\n<expiry>` and the key is base64.

export interface SasToken {
  readonly resource: string;
  readonly signature: string;
  readonly expiry: number;
  readonly keyName: string | undefined;
}

export function parseSasToken(token: string): SasToken {
  const prefix = 'SharedAccessSignature ';
  if (!token.startsWith(prefix)) throw unauthorized('Malformed SAS token: missing SharedAccessSignature prefix');
  const fields = new Map<string, string>();
  for (const part of token.slice(prefix.length).split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw unauthorized('Malformed SAS token: field without a value');
    fields.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const sr = fields.get('sr');
  const sig = fields.get('sig');
  const se = fields.get('se');
  if (!sr || !sig || !se) throw unauthorized('Malformed SAS token: sr, sig and se are required');
  const expiry = Number(se);
  if (!Number.isInteger(expiry)) throw unauthorized('Malformed SAS token: se is not an integer');
  let resource: string;
  let signature: string;
  try {
    resource = decodeURIComponent(sr);
    signature = decodeURIComponent(sig);
  } catch {
    throw unauthorized('Malformed SAS token: bad percent-encoding');
  }
  return { resource, signature, expiry, keyName: fields.get('skn') };
}

export function signSas(resource: string, keyBase64: string, expiry: number): string {
  const toSign = `${encodeURIComponent(resource)}\n${expiry}`;
  return createHmac('sha256', Buffer.from(keyBase64, 'base64')).update(toSign).digest('base64');
}

export function createSasToken(resource: string, keyBase64: string, expiry: number, keyName?: string): string {
  const sig = signSas(resource, keyBase64, expiry);
  let token = `SharedAccessSignature sr=${encodeURIComponent(resource)}&sig=${encodeURIComponent(sig)}&se=${expiry}`;
  if (keyName) token += `&skn=${encodeURIComponent(keyName)}`;
  return token;
}

/**
 * Checks a token's signature against any of the candidate keys, its expiry, and that it grants `expectedResource`
 * (IoT Hub accepts a token scoped to a prefix of the resource, e.g. the hub host for a policy token).
 */
export function verifySasToken(
  token: SasToken,
  keys: ReadonlyArray<string>,
  expectedResource: string,
  nowSeconds = Math.floor(Date.now() / 1000),
): void {
  if (token.expiry <= nowSeconds) throw unauthorized('SAS token expired');
  const granted = token.resource.toLowerCase().replace(/\/+$/, '');
  const wanted = expectedResource.toLowerCase();
  if (wanted !== granted && !wanted.startsWith(`${granted}/`)) {
    throw unauthorized(`SAS token resource ${token.resource} does not grant access to ${expectedResource}`);
  }
  const presented = Buffer.from(token.signature, 'base64');
  for (const key of keys) {
    const expected = Buffer.from(signSas(token.resource, key, token.expiry), 'base64');
    if (expected.length === presented.length && timingSafeEqual(expected, presented)) return;
  }
  throw unauthorized('SAS token signature does not match any key of the identity');
}
