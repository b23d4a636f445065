import { OtaError } from '../errors.ts';
import { isPlainObject } from '../encoding.ts';
import { findSchemaViolation } from './schemaValidator.ts';
import { checkSafeFileName, checkSha256, checkUpdateVersion, normalizeFileNameKey, parseDateTime, parseJsonDocument } from './rules.ts';
import type { ImportManifest, UpdateFile } from './types.ts';

const CODE = 'IMPORT_MANIFEST_INVALID';
/** ADU's service limit on the sum of an update's payload files. */
export const MAX_IMPORT_TOTAL_BYTES = 2 * 1024 ** 3;

/**
 * Parses and validates an ADU import manifest. Accepts v5.0 and the older 4.0 (whose schema is a subset), and
 * "fileName" for "filename". Everything else is strict: the v5 schema, then the rules a schema cannot say.
 * Returns a normalized copy (manifestVersion "5.0", "filename" keys).
 */
export function parseImportManifest(input: string | Uint8Array | object): ImportManifest {
  const document = typeof input === 'string' || input instanceof Uint8Array ? parseJsonDocument(input, 'import manifest') : input;
  if (!isPlainObject(document)) throw new OtaError(CODE, 'import manifest /: must be a JSON object', { field: '/' });
  const normalized = normalizeImportManifest(document);
  const violation = findSchemaViolation('importManifest', normalized);
  if (violation) {
    throw new OtaError(CODE, `import manifest ${violation.field}: ${violation.message} (rule: ${violation.rule})`, { field: violation.field });
  }
  const manifest = normalized as ImportManifest;
  checkImportSemantics(manifest);
  return manifest;
}

function normalizeImportManifest(document: Record<string, unknown>): Record<string, unknown> {
  const version = document.manifestVersion;
  if (version !== undefined && version !== '5.0' && version !== '4.0') {
    throw new OtaError('MANIFEST_VERSION_UNSUPPORTED', `import manifest /manifestVersion: ${JSON.stringify(version)} is not "5.0" or "4.0"`, {
      field: '/manifestVersion',
    });
  }
  const out: Record<string, unknown> = { ...document };
  if (version !== undefined) out.manifestVersion = '5.0';
  if (Array.isArray(document.files)) {
    out.files = document.files.map((file: unknown, i) => {
      const field = `/files/${i}`;
      const normalized = normalizeFileNameKey(file, field, CODE);
      if (!isPlainObject(normalized) || !Array.isArray(normalized.relatedFiles)) return normalized;
      return {
        ...normalized,
        relatedFiles: normalized.relatedFiles.map((related: unknown, j) => normalizeFileNameKey(related, `${field}/relatedFiles/${j}`, CODE)),
      };
    });
  }
  return out;
}

function checkImportSemantics(manifest: ImportManifest): void {
  checkUpdateVersion(manifest.updateId.version, '/updateId/version', CODE);
  parseDateTime(manifest.createdDateTime, '/createdDateTime', CODE);
  const files: UpdateFile[] = manifest.files ?? [];
  const names = new Set<string>();
  let total = 0;
  files.forEach((file, i) => {
    const field = `/files/${i}`;
    checkSafeFileName(file.filename, `${field}/filename`);
    if (names.has(file.filename)) {
      throw new OtaError('MANIFEST_FILE_NAME_UNSAFE', `${field}/filename: ${JSON.stringify(file.filename)} is listed twice`, { field });
    }
    names.add(file.filename);
    if (!Number.isSafeInteger(file.sizeInBytes)) throw new OtaError(CODE, `${field}/sizeInBytes: must be a whole number`, { field });
    total += file.sizeInBytes;
    checkSha256(file.hashes.sha256, `${field}/hashes/sha256`);
    (file.relatedFiles ?? []).forEach((related, j) => {
      checkSafeFileName(related.filename, `${field}/relatedFiles/${j}/filename`);
      checkSha256(related.hashes.sha256, `${field}/relatedFiles/${j}/hashes/sha256`);
    });
  });
  if (total > MAX_IMPORT_TOTAL_BYTES) throw new OtaError(CODE, `/files: sizes add up to ${total} bytes, over the 2 GB limit`, { field: '/files' });
  manifest.instructions.steps.forEach((step, i) => {
    if (step.type === 'reference') {
      checkUpdateVersion(step.updateId.version, `/instructions/steps/${i}/updateId/version`, CODE);
      return;
    }
    for (const [j, name] of step.files.entries()) {
      if (!names.has(name)) {
        const field = `/instructions/steps/${i}/files/${j}`;
        throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${field}: ${JSON.stringify(name)} is not in /files`, { field });
      }
    }
  });
  if (manifest.instructions.steps.some((s) => s.type !== 'reference') && files.length === 0) {
    throw new OtaError(CODE, '/files: inline steps need files', { field: '/files' });
  }
}
