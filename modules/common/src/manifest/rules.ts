import { OtaError } from '../errors.ts';
import type { ResultCodeName } from '../resultCodes.ts';
import { decodeAnyBase64 } from '../encoding.ts';

// Rules that both manifest formats share and that their JSON schemas cannot express.

/** A manifest of a few hundred files is tens of KB; a megabyte is certainly hostile. */
export const MAX_MANIFEST_BYTES = 1024 * 1024;

export function parseJsonDocument(input: string | Uint8Array, what: string): unknown {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (bytes.length > MAX_MANIFEST_BYTES) {
    throw new OtaError('MANIFEST_TOO_LARGE', `${what}: ${bytes.length} bytes exceeds the limit of ${MAX_MANIFEST_BYTES}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch (cause) {
    throw new OtaError('MANIFEST_NOT_JSON', `${what}: not valid UTF-8`, { cause });
  }
  let value: unknown;
  try {
    value = JSON.parse(text) as unknown;
  } catch (cause) {
    throw new OtaError('MANIFEST_NOT_JSON', `${what}: not valid JSON (${(cause as Error).message})`, { cause });
  }
  const duplicate = findDuplicateKey(text);
  if (duplicate) throw new OtaError('MANIFEST_NOT_JSON', `${what} ${duplicate}: key appears twice in one object`, { field: duplicate });
  return value;
}

/**
 * JSON.parse keeps the last of two equal keys, other parsers (the ADU agent's) may keep the first: a signed
 * document must not mean two things. Runs on text JSON.parse has already accepted, so it only tracks strings
 * and nesting. Returns the JSON pointer of the first duplicate.
 */
export function findDuplicateKey(text: string): string | undefined {
  const stack: { keys: Set<string> | undefined; path: string; index: number }[] = [];
  let expectKey = false;
  let lastKey = '';
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      const top = stack.at(-1);
      if (expectKey && top?.keys) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        const pointer = `${top.path}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
        if (top.keys.has(key)) return pointer;
        top.keys.add(key);
        lastKey = key;
        expectKey = false;
      }
      i = end;
    } else if (c === '{' || c === '[') {
      const parent = stack.at(-1);
      const path = parent === undefined ? '' : parent.keys ? `${parent.path}/${lastKey}` : `${parent.path}/${parent.index}`;
      stack.push({ keys: c === '{' ? new Set() : undefined, path, index: 0 });
      expectKey = c === '{';
    } else if (c === '}' || c === ']') {
      stack.pop();
    } else if (c === ',') {
      const top = stack.at(-1);
      if (top?.keys) expectKey = true;
      else if (top) top.index += 1;
    }
  }
  return undefined;
}

/** File names become paths on the target and entry names in bundles: they must stay one plain name. */
export function checkSafeFileName(name: string, field: string): void {
  const reason =
    name === '.' || name === '..'
      ? 'is a dot directory'
      : /[/\\]/.test(name)
        ? 'contains a path separator'
        : // eslint-disable-next-line no-control-regex
          /[\u0000-\u001f\u007f]/.test(name)
          ? 'contains a control character'
          : name.trim() !== name
            ? 'has leading or trailing whitespace'
            : undefined;
  if (reason) throw new OtaError('MANIFEST_FILE_NAME_UNSAFE', `${field}: file name ${JSON.stringify(name)} ${reason}`, { field });
}

export function checkSha256(value: string, field: string): Buffer {
  const bytes = decodeAnyBase64(value);
  if (!bytes || bytes.length !== 32) {
    throw new OtaError('MANIFEST_HASH_MALFORMED', `${field}: sha256 must be 32 bytes in base64, got ${JSON.stringify(value)}`, { field });
  }
  return bytes;
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})$/;

/** Milliseconds of an ISO 8601 date-time, NaN if it is not one. ADU writes 7 fraction digits; JS keeps 3. */
export function dateTimeMillis(value: string): number {
  return ISO_8601.test(value) ? Date.parse(value.replace(/(\.\d{3})\d+/, '$1')) : Number.NaN;
}

/** Date.parse alone accepts far more than ISO 8601. */
export function parseDateTime(value: string, field: string, code: ResultCodeName): Date {
  const millis = dateTimeMillis(value);
  if (Number.isNaN(millis)) {
    throw new OtaError(code, `${field}: ${JSON.stringify(value)} is not an ISO 8601 date-time with a time zone`, { field });
  }
  return new Date(millis);
}

/** ADU: two to four dot separated parts, each 0..2147483647. */
export function checkUpdateVersion(value: string, field: string, code: ResultCodeName): void {
  const parts = value.split('.');
  if (parts.length < 2 || parts.length > 4 || parts.some((p) => !/^\d{1,10}$/.test(p) || Number(p) > 2147483647)) {
    throw new OtaError(code, `${field}: version ${JSON.stringify(value)} must have 2 to 4 numeric parts of at most 2147483647`, { field });
  }
}

/**
 * ADU's own producers write both "filename" and "fileName". Accept either, refuse both-and-different
 * (a reader choosing one and a signer the other would disagree about which file is meant).
 */
export function normalizeFileNameKey(file: unknown, field: string, code: ResultCodeName): unknown {
  if (typeof file !== 'object' || file === null || Array.isArray(file)) return file;
  const record = file as Record<string, unknown>;
  if (!('fileName' in record)) return file;
  if ('filename' in record && record.filename !== record.fileName) {
    throw new OtaError(code, `${field}: "filename" and "fileName" both given and different`, { field });
  }
  const { fileName, ...rest } = record;
  return { ...rest, filename: 'filename' in record ? record.filename : fileName };
}
