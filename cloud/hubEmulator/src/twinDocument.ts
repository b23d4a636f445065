import { badRequest, tooLarge } from './hubError.ts';

// Twin sections are JSON documents changed by merge patches: `null` deletes a key, objects merge, anything
// else replaces. The limits are IoT Hub's: keys up to 1 KB without `.`, `$`, space or control characters,
// string values up to 4 KB, nesting up to 10 levels, tags up to 8 KB, desired and reported up to 32 KB each.

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };
export type TwinSection = 'tags' | 'desired' | 'reported';

export const twinLimits = {
  keyBytes: 1024,
  stringValueBytes: 4096,
  depth: 10,
  sectionBytes: { tags: 8 * 1024, desired: 32 * 1024, reported: 32 * 1024 } satisfies Record<TwinSection, number>,
} as const;

// eslint-disable-next-line no-control-regex
const forbiddenKeyCharacters = /[.$ \u0000-\u001f\u007f-\u009f]/;

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validates a patch (or a whole replacement document) for one twin section. `$`-keys are read-only metadata. */
export function validateTwinPatch(section: TwinSection, patch: unknown): JsonObject {
  if (!isJsonObject(patch)) throw badRequest(`${section}: a twin patch must be a JSON object`);
  const visit = (value: unknown, where: string, depth: number): void => {
    if (depth > twinLimits.depth) throw badRequest(`${where}: nesting is deeper than ${twinLimits.depth} levels`);
    if (typeof value === 'string') {
      if (Buffer.byteLength(value) > twinLimits.stringValueBytes) {
        throw badRequest(`${where}: string value is longer than ${twinLimits.stringValueBytes} bytes`);
      }
      return;
    }
    if (typeof value === 'number' && !Number.isFinite(value)) throw badRequest(`${where}: numbers must be finite`);
    if (Array.isArray(value)) {
      value.forEach((item, i) => {
        if (item === null) throw badRequest(`${where}[${i}]: arrays cannot contain null`);
        visit(item, `${where}[${i}]`, depth + 1);
      });
      return;
    }
    if (isJsonObject(value)) {
      for (const [key, child] of Object.entries(value)) {
        if (key.length === 0) throw badRequest(`${where}: empty property names are not allowed`);
        if (Buffer.byteLength(key) > twinLimits.keyBytes) throw badRequest(`${where}: property name longer than ${twinLimits.keyBytes} bytes`);
        if (forbiddenKeyCharacters.test(key)) {
          throw badRequest(`${where}.${key}: property names cannot contain '.', '$', spaces or control characters`);
        }
        visit(child, `${where}.${key}`, depth + 1);
      }
    }
  };
  const cleaned: JsonObject = {};
  for (const [key, value] of Object.entries(patch)) {
    // Clients echo back `$version`/`$metadata`; IoT Hub ignores them in patches.
    if (key.startsWith('$')) continue;
    cleaned[key] = value;
  }
  visit(cleaned, section, 1);
  return cleaned;
}

/** Applies an RFC 7386 merge patch and returns the new document; the input is not modified. */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const result: JsonObject = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[key];
    } else if (isJsonObject(value)) {
      const existing = result[key];
      result[key] = mergePatch(isJsonObject(existing) ? existing : {}, value);
    } else {
      result[key] = value;
    }
  }
  return result;
}

export function assertSectionSize(section: TwinSection, document: JsonObject): void {
  const limit = twinLimits.sectionBytes[section];
  if (Buffer.byteLength(JSON.stringify(document)) > limit) throw tooLarge(`Twin ${section} properties`, limit);
}
