import { OtaError } from '../errors.ts';
import { isPlainObject } from '../encoding.ts';
import { findSchemaViolation } from './schemaValidator.ts';
import { checkSafeFileName, checkSha256, checkUpdateVersion, normalizeFileNameKey, parseDateTime, parseJsonDocument } from './rules.ts';
import { isDetachedManifestPointer } from './types.ts';
import type { ManifestExtension, UpdateFile, UpdateManifest } from './types.ts';

const CODE = 'UPDATE_MANIFEST_INVALID';
const EXT = 'MANIFEST_EXTENSION_INVALID';
/** Key of our extension block at the top level of an update manifest. */
export const EXTENSION_KEY = 'edgeOta';

/**
 * Parses and validates a device-facing ADU update manifest: a full manifest (steps inline or by reference to a
 * detached manifest) or a mini manifest pointing at a detached one. manifestVersion "4" and "5" are both read
 * (ADU's producers emit both for the same shape) and "fileName" is read as "filename".
 * This checks form only; whether to trust the bytes is `verifyUpdateManifest`'s job.
 */
export function parseUpdateManifest(input: string | Uint8Array | object): UpdateManifest {
  const document = typeof input === 'string' || input instanceof Uint8Array ? parseJsonDocument(input, 'update manifest') : input;
  if (!isPlainObject(document)) throw new OtaError(CODE, 'update manifest /: must be a JSON object', { field: '/' });
  const version = document.manifestVersion;
  if (version !== undefined && version !== '4' && version !== '5') {
    throw new OtaError('MANIFEST_VERSION_UNSUPPORTED', `update manifest /manifestVersion: ${JSON.stringify(version)} is not "4" or "5"`, {
      field: '/manifestVersion',
    });
  }
  const normalized: Record<string, unknown> = { ...document };
  if (isPlainObject(document.files)) {
    normalized.files = Object.fromEntries(
      Object.entries(document.files).map(([id, file]) => [id, normalizeFileNameKey(file, `/files/${id}`, CODE)]),
    );
  }
  // SchemaStore's "-5" schema pins the version constant to "4"; the shape is the same for "5".
  const violation = findSchemaViolation('updateManifest', version === '5' ? { ...normalized, manifestVersion: '4' } : normalized);
  if (violation) {
    throw new OtaError(CODE, `update manifest ${violation.field}: ${violation.message} (rule: ${violation.rule})`, { field: violation.field });
  }
  const manifest = normalized as UpdateManifest;
  checkUpdateSemantics(manifest);
  return manifest;
}

function checkUpdateSemantics(manifest: UpdateManifest): void {
  checkUpdateVersion(manifest.updateId.version, '/updateId/version', CODE);
  const names = new Map<string, string>();
  for (const [id, file] of Object.entries<UpdateFile>(manifest.files)) {
    const field = `/files/${id}`;
    checkSafeFileName(id, `${field} (file id)`);
    checkSafeFileName(file.filename, `${field}/filename`);
    const other = names.get(file.filename);
    if (other !== undefined) {
      throw new OtaError('MANIFEST_FILE_NAME_UNSAFE', `${field}/filename: ${JSON.stringify(file.filename)} is also the name of file ${other}`, { field });
    }
    names.set(file.filename, id);
    if (!Number.isSafeInteger(file.sizeInBytes)) throw new OtaError(CODE, `${field}/sizeInBytes: must be a whole number`, { field });
    checkSha256(file.hashes.sha256, `${field}/hashes/sha256`);
    (file.relatedFiles ?? []).forEach((related, j) => {
      checkSafeFileName(related.filename, `${field}/relatedFiles/${j}/filename`);
      checkSha256(related.hashes.sha256, `${field}/relatedFiles/${j}/hashes/sha256`);
    });
  }
  const requireFile = (id: string, field: string): void => {
    if (!Object.hasOwn(manifest.files, id)) {
      throw new OtaError('MANIFEST_FILE_REFERENCE_INVALID', `${field}: file id ${JSON.stringify(id)} is not in /files`, { field });
    }
  };
  if (isDetachedManifestPointer(manifest)) {
    requireFile(manifest.detachedManifestFileId, '/detachedManifestFileId');
  } else {
    parseDateTime(manifest.createdDateTime, '/createdDateTime', CODE);
    manifest.instructions.steps.forEach((step, i) => {
      if (step.type === 'reference') requireFile(step.detachedManifestFileId, `/instructions/steps/${i}/detachedManifestFileId`);
      else step.files.forEach((id, j) => requireFile(id, `/instructions/steps/${i}/files/${j}`));
    });
  }
  if (EXTENSION_KEY in manifest) manifest.edgeOta = checkExtension(manifest.edgeOta);
}

const MANIFEST_ID = /^[A-Za-z0-9._:-]{8,128}$/;

function checkExtension(value: unknown): ManifestExtension {
  const at = `/${EXTENSION_KEY}`;
  if (!isPlainObject(value)) throw new OtaError(EXT, `${at}: must be an object`, { field: at });
  for (const key of Object.keys(value)) {
    if (!['manifestId', 'expiresDateTime', 'rollback', 'minimumVersion'].includes(key)) {
      throw new OtaError(EXT, `${at}/${key}: property is not allowed`, { field: `${at}/${key}` });
    }
  }
  const { manifestId, expiresDateTime, rollback, minimumVersion } = value;
  if (typeof manifestId !== 'string' || !MANIFEST_ID.test(manifestId)) {
    throw new OtaError(EXT, `${at}/manifestId: must be 8 to 128 characters of [A-Za-z0-9._:-]`, { field: `${at}/manifestId` });
  }
  if (typeof expiresDateTime !== 'string') {
    throw new OtaError(EXT, `${at}/expiresDateTime: must be an ISO 8601 date-time string`, { field: `${at}/expiresDateTime` });
  }
  parseDateTime(expiresDateTime, `${at}/expiresDateTime`, EXT);
  if (rollback !== undefined && typeof rollback !== 'boolean') {
    throw new OtaError(EXT, `${at}/rollback: must be a boolean`, { field: `${at}/rollback` });
  }
  if (minimumVersion !== undefined) {
    if (typeof minimumVersion !== 'string') throw new OtaError(EXT, `${at}/minimumVersion: must be a string`, { field: `${at}/minimumVersion` });
    checkUpdateVersion(minimumVersion, `${at}/minimumVersion`, EXT);
  }
  return value as unknown as ManifestExtension;
}
