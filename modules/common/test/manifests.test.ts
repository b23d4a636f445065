import path from 'node:path';
/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-assignment --
   hostile-input tables mutate untyped JSON on purpose: that is the point of them. */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { childUpdateManifestFromImport, isOtaError, parseImportManifest, parseUpdateManifest, updateManifestFromImport } from '../src/index.ts';
import type { FullUpdateManifest, ResultCodeName } from '../src/index.ts';
import { sharedSchemasDir } from './sharedSchemas.ts';

const sha = 'mcB5SexMU4JOOzqmlJqKbue9qMskWY3EI/iVjJxCtAs=';

function validImport(): Record<string, unknown> {
  return {
    updateId: { provider: 'Contoso', name: 'Toaster', version: '1.0.2' },
    compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Toaster' }],
    instructions: {
      steps: [
        { handler: 'microsoft/script:1', files: ['install.sh', 'app.bin'], handlerProperties: { arguments: '--install', installedCriteria: '1.0.2' } },
        { type: 'reference', updateId: { provider: 'Contoso', name: 'Sensor', version: '2.0' } },
      ],
    },
    files: [
      { filename: 'install.sh', sizeInBytes: 718, hashes: { sha256: sha } },
      { filename: 'app.bin', sizeInBytes: 1024, hashes: { sha256: sha } },
    ],
    manifestVersion: '5.0',
    createdDateTime: '2022-01-19T22:02:33.2583117Z',
  };
}

function validUpdate(): Record<string, unknown> {
  return {
    manifestVersion: '4',
    updateId: { provider: 'Contoso', name: 'Toaster', version: '1.0.2' },
    compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Toaster' }],
    instructions: { steps: [{ handler: 'microsoft/script:1', files: ['f0'] }, { type: 'reference', detachedManifestFileId: 'f1' }] },
    files: {
      f0: { filename: 'install.sh', sizeInBytes: 718, hashes: { sha256: sha } },
      f1: { filename: 'contoso.sensor.2.0.updatemanifest.json', sizeInBytes: 900, hashes: { sha256: sha } },
    },
    createdDateTime: '2022-01-19T22:02:33.2583117Z',
    edgeOta: { manifestId: '6f1c1f7e-0000-4000-8000-000000000001', expiresDateTime: '2030-01-01T00:00:00Z' },
  };
}

type Mutation = (m: any) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

function mutated(base: () => Record<string, unknown>, mutate: Mutation): string {
  const m = base();
  mutate(m);
  return JSON.stringify(m);
}

function expectRejected(parse: (b: string) => unknown, input: string, code: ResultCodeName, field?: string): void {
  let caught: unknown;
  try {
    parse(input);
  } catch (error) {
    caught = error;
  }
  expect(isOtaError(caught), `expected rejection, got ${String(caught)}`).toBe(true);
  const error = caught as { code: string; message: string; field?: string };
  expect(error.code, error.message).toBe(code);
  if (field !== undefined) {
    expect(error.field, error.message).toBe(field);
    expect(error.message).toContain(field);
  }
}

describe('import manifest', () => {
  it('accepts a valid manifest and normalizes tolerated spellings', () => {
    expect(parseImportManifest(JSON.stringify(validImport())).updateId.version).toBe('1.0.2');
    const old = parseImportManifest(mutated(validImport, (m) => {
      m.manifestVersion = '4.0';
      m.files[0] = { fileName: 'install.sh', sizeInBytes: 718, hashes: { sha256: sha } };
    }));
    expect(old.manifestVersion).toBe('5.0');
    expect(old.files[0]!.filename).toBe('install.sh');
    expect(parseImportManifest(Buffer.from(JSON.stringify(validImport())))).toBeDefined();
  });

  const hostile: [string, Mutation | string, ResultCodeName, string?][] = [
    ['empty document', '', 'MANIFEST_NOT_JSON'],
    ['truncated JSON', '{"updateId": {', 'MANIFEST_NOT_JSON'],
    ['invalid UTF-8', '\uFFFD', 'IMPORT_MANIFEST_INVALID'],
    ['array at the top', '[]', 'IMPORT_MANIFEST_INVALID', '/'],
    ['null at the top', 'null', 'IMPORT_MANIFEST_INVALID', '/'],
    ['duplicate key (parsers disagree on which wins)', '{"updateId":{"provider":"a","name":"b","version":"1.0"},"updateId":{"provider":"evil","name":"b","version":"9.0"}}', 'MANIFEST_NOT_JSON', '/updateId'],
    ['duplicate key spelled with an escape', '{"updateId":1,"\\u0075pdateId":2}', 'MANIFEST_NOT_JSON', '/updateId'],
    ['oversized document', `{"pad":"${'x'.repeat(1024 * 1024)}"}`, 'MANIFEST_TOO_LARGE'],
    ['manifestVersion 6.0', (m) => (m.manifestVersion = '6.0'), 'MANIFEST_VERSION_UNSUPPORTED', '/manifestVersion'],
    ['manifestVersion as number', (m) => (m.manifestVersion = 5), 'MANIFEST_VERSION_UNSUPPORTED', '/manifestVersion'],
    ['missing updateId', (m) => delete m.updateId, 'IMPORT_MANIFEST_INVALID', '/'],
    ['provider with a slash', (m) => (m.updateId.provider = 'Con/toso'), 'IMPORT_MANIFEST_INVALID', '/updateId/provider'],
    ['provider too long', (m) => (m.updateId.provider = 'a'.repeat(65)), 'IMPORT_MANIFEST_INVALID', '/updateId/provider'],
    ['version with one part', (m) => (m.updateId.version = '1'), 'IMPORT_MANIFEST_INVALID', '/updateId/version'],
    ['version with five parts', (m) => (m.updateId.version = '1.2.3.4.5'), 'IMPORT_MANIFEST_INVALID', '/updateId/version'],
    ['version part over int32', (m) => (m.updateId.version = '1.2147483648'), 'IMPORT_MANIFEST_INVALID', '/updateId/version'],
    ['extra updateId property', (m) => (m.updateId.evil = 'x'), 'IMPORT_MANIFEST_INVALID', '/updateId'],
    ['empty compatibility', (m) => (m.compatibility = []), 'IMPORT_MANIFEST_INVALID', '/compatibility'],
    ['eleven compatibility entries', (m) => (m.compatibility = Array(11).fill({ a: 'b' })), 'IMPORT_MANIFEST_INVALID', '/compatibility'],
    ['compatibility value not a string', (m) => (m.compatibility[0].deviceModel = 5), 'IMPORT_MANIFEST_INVALID', '/compatibility/0/deviceModel'],
    ['empty compatibility entry', (m) => (m.compatibility[0] = {}), 'IMPORT_MANIFEST_INVALID', '/compatibility/0'],
    ['no steps', (m) => (m.instructions.steps = []), 'IMPORT_MANIFEST_INVALID', '/instructions/steps'],
    ['eleven steps', (m) => (m.instructions.steps = Array(11).fill(m.instructions.steps[0])), 'IMPORT_MANIFEST_INVALID', '/instructions/steps'],
    ['inline step without handler', (m) => delete m.instructions.steps[0].handler, 'IMPORT_MANIFEST_INVALID', '/instructions/steps/0'],
    ['handler without version', (m) => (m.instructions.steps[0].handler = 'microsoft/script'), 'IMPORT_MANIFEST_INVALID', '/instructions/steps/0/handler'],
    ['inline step with unknown property', (m) => (m.instructions.steps[0].run = 'rm -rf /'), 'IMPORT_MANIFEST_INVALID', '/instructions/steps/0'],
    ['reference step without updateId', (m) => delete m.instructions.steps[1].updateId, 'IMPORT_MANIFEST_INVALID', '/instructions/steps/1'],
    ['step names an undeclared file', (m) => m.instructions.steps[0].files.push('ghost.bin'), 'MANIFEST_FILE_REFERENCE_INVALID', '/instructions/steps/0/files/2'],
    ['file without hashes', (m) => delete m.files[0].hashes, 'IMPORT_MANIFEST_INVALID', '/files/0'],
    ['sha256 not base64', (m) => (m.files[0].hashes.sha256 = 'not base64!'), 'MANIFEST_HASH_MALFORMED', '/files/0/hashes/sha256'],
    ['sha256 of wrong length', (m) => (m.files[0].hashes.sha256 = 'AAAA'), 'MANIFEST_HASH_MALFORMED', '/files/0/hashes/sha256'],
    ['size zero', (m) => (m.files[0].sizeInBytes = 0), 'IMPORT_MANIFEST_INVALID', '/files/0/sizeInBytes'],
    ['size over 2 GB', (m) => (m.files[0].sizeInBytes = 2 ** 31 + 1), 'IMPORT_MANIFEST_INVALID', '/files/0/sizeInBytes'],
    ['fractional size', (m) => (m.files[0].sizeInBytes = 1.5), 'IMPORT_MANIFEST_INVALID', '/files/0'],
    ['sizes adding up over 2 GB', (m) => { m.files[0].sizeInBytes = 2 ** 31; m.files[1].sizeInBytes = 2 ** 31; }, 'IMPORT_MANIFEST_INVALID', '/files'],
    ['path traversal in filename', (m) => { m.files[0].filename = '../etc/passwd'; m.instructions.steps[0].files[0] = '../etc/passwd'; }, 'MANIFEST_FILE_NAME_UNSAFE', '/files/0/filename'],
    ['dot-dot filename', (m) => { m.files[0].filename = '..'; m.instructions.steps[0].files[0] = '..'; }, 'MANIFEST_FILE_NAME_UNSAFE', '/files/0/filename'],
    ['backslash in filename', (m) => { m.files[0].filename = 'a\\b'; m.instructions.steps[0].files[0] = 'a\\b'; }, 'MANIFEST_FILE_NAME_UNSAFE', '/files/0/filename'],
    ['control character in filename', (m) => { m.files[0].filename = 'a\nb'; m.instructions.steps[0].files[0] = 'a\nb'; }, 'MANIFEST_FILE_NAME_UNSAFE', '/files/0/filename'],
    ['duplicate filename', (m) => (m.files[1].filename = 'install.sh'), 'MANIFEST_FILE_NAME_UNSAFE', '/files/1'],
    ['filename and fileName disagree', (m) => (m.files[0].fileName = 'other.sh'), 'IMPORT_MANIFEST_INVALID', '/files/0'],
    ['eleven files', (m) => (m.files = Array.from({ length: 11 }, (_, i) => ({ filename: `f${i}`, sizeInBytes: 1, hashes: { sha256: sha } }))), 'IMPORT_MANIFEST_INVALID', '/files'],
    ['three hashes', (m) => (m.files[0].hashes = { sha256: sha, sha384: 'x', sha512: 'y' }), 'IMPORT_MANIFEST_INVALID', '/files/0/hashes'],
    ['createdDateTime not a date', (m) => (m.createdDateTime = 'yesterday'), 'IMPORT_MANIFEST_INVALID', '/createdDateTime'],
    ['createdDateTime without zone', (m) => (m.createdDateTime = '2022-01-19T22:02:33'), 'IMPORT_MANIFEST_INVALID', '/createdDateTime'],
    ['description too long', (m) => (m.description = 'x'.repeat(513)), 'IMPORT_MANIFEST_INVALID', '/description'],
    ['inline steps without files array', (m) => { m.files = []; }, 'MANIFEST_FILE_REFERENCE_INVALID', '/instructions/steps/0/files/0'],
    ['related file with unsafe name', (m) => (m.files[0].relatedFiles = [{ filename: '/abs', sizeInBytes: 1, hashes: { sha256: sha } }]), 'MANIFEST_FILE_NAME_UNSAFE', '/files/0/relatedFiles/0/filename'],
    ['download handler malformed', (m) => (m.files[0].downloadHandler = { id: 'delta' }), 'IMPORT_MANIFEST_INVALID', '/files/0/downloadHandler/id'],
  ];
  for (const [name, mutation, code, field] of hostile) {
    it(`rejects: ${name}`, () => {
      const input = typeof mutation === 'string' ? mutation : mutated(validImport, mutation);
      expectRejected((b) => parseImportManifest(name === 'invalid UTF-8' ? Buffer.from([0x7b, 0xff, 0x7d]) : b), input, name === 'invalid UTF-8' ? 'MANIFEST_NOT_JSON' : code, name === 'invalid UTF-8' ? undefined : field);
    });
  }
});

describe('update manifest', () => {
  it('accepts full and mini manifests, version "4" and "5", and fileName', () => {
    expect(parseUpdateManifest(JSON.stringify(validUpdate())).updateId.name).toBe('Toaster');
    expect(parseUpdateManifest(mutated(validUpdate, (m) => (m.manifestVersion = '5'))).manifestVersion).toBe('5');
    const renamed = parseUpdateManifest(mutated(validUpdate, (m) => (m.files.f0 = { fileName: 'install.sh', sizeInBytes: 718, hashes: { sha256: sha } }))) as FullUpdateManifest;
    expect(renamed.files.f0!.filename).toBe('install.sh');
    const mini = { manifestVersion: '5', updateId: { provider: 'a', name: 'b', version: '1.0' }, detachedManifestFileId: 'f1', files: { f1: { filename: 'x.json', sizeInBytes: 2, hashes: { sha256: sha } } } };
    expect(parseUpdateManifest(JSON.stringify(mini)).files.f1!.filename).toBe('x.json');
  });

  const hostile: [string, Mutation, ResultCodeName, string?][] = [
    ['manifestVersion "5.0"', (m) => (m.manifestVersion = '5.0'), 'MANIFEST_VERSION_UNSUPPORTED', '/manifestVersion'],
    ['manifestVersion missing', (m) => delete m.manifestVersion, 'UPDATE_MANIFEST_INVALID', '/'],
    ['files as an array', (m) => (m.files = [m.files.f0]), 'UPDATE_MANIFEST_INVALID'],
    ['no files', (m) => (m.files = {}), 'UPDATE_MANIFEST_INVALID', '/files'],
    ['inline step references a missing file id', (m) => (m.instructions.steps[0].files = ['nope']), 'MANIFEST_FILE_REFERENCE_INVALID', '/instructions/steps/0/files/0'],
    ['reference step points at a missing file id', (m) => (m.instructions.steps[1].detachedManifestFileId = 'nope'), 'MANIFEST_FILE_REFERENCE_INVALID', '/instructions/steps/1/detachedManifestFileId'],
    ['reference step with updateId (import manifest shape)', (m) => (m.instructions.steps[1] = { type: 'reference', updateId: m.updateId }), 'UPDATE_MANIFEST_INVALID', '/instructions/steps/1'],
    ['file id with a path', (m) => { m.files['../x'] = m.files.f0; m.files.f0.filename = 'other'; }, 'MANIFEST_FILE_NAME_UNSAFE'],
    ['two ids share a filename', (m) => (m.files.f1.filename = 'install.sh'), 'MANIFEST_FILE_NAME_UNSAFE', '/files/f1'],
    ['absolute filename', (m) => (m.files.f0.filename = '/etc/shadow'), 'MANIFEST_FILE_NAME_UNSAFE', '/files/f0/filename'],
    ['sha256 of 31 bytes', (m) => (m.files.f0.hashes.sha256 = Buffer.alloc(31).toString('base64')), 'MANIFEST_HASH_MALFORMED', '/files/f0/hashes/sha256'],
    ['negative size', (m) => (m.files.f0.sizeInBytes = -1), 'UPDATE_MANIFEST_INVALID', '/files/f0/sizeInBytes'],
    ['size as a string', (m) => (m.files.f0.sizeInBytes = '718'), 'UPDATE_MANIFEST_INVALID', '/files/f0/sizeInBytes'],
    ['21 files', (m) => { for (let i = 0; i < 21; i += 1) m.files[`x${i}`] = { filename: `x${i}`, sizeInBytes: 1, hashes: { sha256: sha } }; }, 'UPDATE_MANIFEST_INVALID', '/files'],
    ['no compatibility', (m) => delete m.compatibility, 'UPDATE_MANIFEST_INVALID'],
    ['createdDateTime garbage', (m) => (m.createdDateTime = '2022-13-45T99:99:99Z'), 'UPDATE_MANIFEST_INVALID', '/createdDateTime'],
    ['edgeOta not an object', (m) => (m.edgeOta = 'x'), 'MANIFEST_EXTENSION_INVALID', '/edgeOta'],
    ['edgeOta without manifestId', (m) => delete m.edgeOta.manifestId, 'MANIFEST_EXTENSION_INVALID', '/edgeOta/manifestId'],
    ['edgeOta manifestId too short', (m) => (m.edgeOta.manifestId = 'abc'), 'MANIFEST_EXTENSION_INVALID', '/edgeOta/manifestId'],
    ['edgeOta expiry not a date', (m) => (m.edgeOta.expiresDateTime = 'tomorrow'), 'MANIFEST_EXTENSION_INVALID', '/edgeOta/expiresDateTime'],
    ['edgeOta expiry as number', (m) => (m.edgeOta.expiresDateTime = 1893456000), 'MANIFEST_EXTENSION_INVALID', '/edgeOta/expiresDateTime'],
    ['edgeOta rollback as string', (m) => (m.edgeOta.rollback = 'yes'), 'MANIFEST_EXTENSION_INVALID', '/edgeOta/rollback'],
    ['edgeOta unknown key', (m) => (m.edgeOta.trustMe = true), 'MANIFEST_EXTENSION_INVALID', '/edgeOta/trustMe'],
    ['edgeOta minimumVersion malformed', (m) => (m.edgeOta.minimumVersion = 'v2'), 'MANIFEST_EXTENSION_INVALID', '/edgeOta/minimumVersion'],
    ['mini manifest with two files', (m) => { delete m.instructions; delete m.compatibility; delete m.createdDateTime; m.detachedManifestFileId = 'f1'; }, 'UPDATE_MANIFEST_INVALID', '/files'],
    ['duplicate file id', () => undefined, 'MANIFEST_NOT_JSON', '/files/f0'],
    ['prototype pollution key', (m) => (m.files.__proto__ = { filename: 'x' }), 'UPDATE_MANIFEST_INVALID'],
  ];
  for (const [name, mutation, code, field] of hostile) {
    it(`rejects: ${name}`, () => {
      const input = name === 'prototype pollution key'
        ? JSON.stringify(validUpdate()).replace('"files":{', '"files":{"__proto__":{"filename":"x"},')
        : name === 'duplicate file id'
          ? JSON.stringify(validUpdate()).replace('"files":{', '"files":{"f0":{"filename":"evil.sh","sizeInBytes":1,"hashes":{"sha256":"x"}},')
          : mutated(validUpdate, mutation);
      expectRejected(parseUpdateManifest, input, code, field);
    });
  }
});

describe('update manifest from an import manifest', () => {
  const child: FullUpdateManifest = {
    manifestVersion: '4',
    updateId: { provider: 'Contoso', name: 'Sensor', version: '2.0' },
    compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Sensor' }],
    instructions: { steps: [{ handler: 'microsoft/swupdate:1', files: ['file0'] }] },
    files: { file0: { filename: 'sensor.swu', sizeInBytes: 10, hashes: { sha256: sha } } },
    createdDateTime: '2022-01-19T22:02:33Z',
  };
  const childFile = { filename: 'contoso.sensor.2.0.updatemanifest.json', sizeInBytes: 500, hashes: { sha256: sha } };

  it('maps files to ids, steps to ids, references to detached manifests and adds edgeOta', () => {
    const { manifest, bytes } = updateManifestFromImport(parseImportManifest(JSON.stringify(validImport())), {
      expiresDateTime: new Date('2030-01-01T00:00:00Z'),
      manifestId: 'issue-0001',
      rollback: true,
      detachedManifests: [{ manifest: child, file: childFile }],
    });
    expect(manifest.instructions.steps).toEqual([
      { handler: 'microsoft/script:1', files: ['file0', 'file1'], handlerProperties: { arguments: '--install', installedCriteria: '1.0.2' } },
      { type: 'reference', detachedManifestFileId: 'file2' },
    ]);
    expect(manifest.files.file2!.filename).toBe(childFile.filename);
    expect(manifest.edgeOta).toEqual({ manifestId: 'issue-0001', expiresDateTime: '2030-01-01T00:00:00.000Z', rollback: true });
    expect(JSON.parse(bytes.toString())).toEqual(manifest);
  });

  it('produces manifests that ADU’s own update manifest schema accepts, edgeOta included', () => {
    const ajv = new Ajv({ strict: false });
    for (const file of ['azure-deviceupdate-manifest-definitions-5.0.json', 'azure-deviceupdate-update-manifest-5.json']) {
      ajv.addSchema(JSON.parse(readFileSync(path.join(sharedSchemasDir, file), 'utf8')) as object);
    }
    const validate = ajv.getSchema('https://json.schemastore.org/azure-deviceupdate-update-manifest-5.json')!;
    const { bytes } = updateManifestFromImport(parseImportManifest(JSON.stringify(validImport())), {
      expiresDateTime: new Date('2030-01-01T00:00:00Z'),
      rollback: true,
      minimumVersion: '1.0',
      detachedManifests: [{ manifest: child, file: childFile }],
    });
    expect(validate(JSON.parse(bytes.toString())), JSON.stringify(validate.errors)).toBe(true);
  });

  it('refuses a reference step whose detached manifest was not supplied', () => {
    expect(() => updateManifestFromImport(parseImportManifest(JSON.stringify(validImport())), { expiresDateTime: new Date() })).toThrow(
      /steps\/1\/updateId: no detached update manifest supplied for Contoso\/Sensor@2.0/,
    );
  });

  const childImport = (): Record<string, unknown> => ({
    updateId: { provider: 'Contoso', name: 'Sensor', version: '2.0' },
    compatibility: [{ deviceManufacturer: 'Contoso', deviceModel: 'Sensor' }],
    instructions: { steps: [{ handler: 'microsoft/swupdate:1', files: ['sensor.swu', 'install.sh'] }] },
    files: [
      { filename: 'sensor.swu', sizeInBytes: 10, hashes: { sha256: sha } },
      { filename: 'install.sh', sizeInBytes: 20, hashes: { sha256: sha } },
    ],
    manifestVersion: '5.0',
    createdDateTime: '2022-01-18T10:00:00.1234567Z',
  });

  it('builds a child update manifest under its own id prefix, without edgeOta, the same bytes every time', () => {
    const imported = parseImportManifest(JSON.stringify(childImport()));
    const { manifest, bytes } = childUpdateManifestFromImport(imported, { fileIdPrefix: 'step1file' });
    expect(Object.keys(manifest.files)).toEqual(['step1file0', 'step1file1']);
    expect(manifest.instructions.steps).toEqual([{ handler: 'microsoft/swupdate:1', files: ['step1file0', 'step1file1'] }]);
    expect(manifest.createdDateTime).toBe('2022-01-18T10:00:00.1234567Z');
    expect(manifest).not.toHaveProperty('edgeOta');
    expect(childUpdateManifestFromImport(imported, { fileIdPrefix: 'step1file' }).bytes.equals(bytes)).toBe(true);
    expect(parseUpdateManifest(bytes)).toEqual(manifest);
  });

  it('gives a parent and its child ids unique across both, each manifest valid under ADU’s schema', () => {
    const ajv = new Ajv({ strict: false });
    for (const file of ['azure-deviceupdate-manifest-definitions-5.0.json', 'azure-deviceupdate-update-manifest-5.json']) {
      ajv.addSchema(JSON.parse(readFileSync(path.join(sharedSchemasDir, file), 'utf8')) as object);
    }
    const validate = ajv.getSchema('https://json.schemastore.org/azure-deviceupdate-update-manifest-5.json')!;
    const childBuilt = childUpdateManifestFromImport(parseImportManifest(JSON.stringify(childImport())), { fileIdPrefix: 'step1file' });
    const parent = updateManifestFromImport(parseImportManifest(JSON.stringify(validImport())), {
      expiresDateTime: new Date('2030-01-01T00:00:00Z'),
      detachedManifests: [{ manifest: childBuilt.manifest, file: { ...childFile, sizeInBytes: childBuilt.bytes.length } }],
    });
    const ids = [...Object.keys(parent.manifest.files), ...Object.keys(childBuilt.manifest.files)];
    expect(ids).toEqual(['file0', 'file1', 'file2', 'step1file0', 'step1file1']);
    for (const bytes of [parent.bytes, childBuilt.bytes]) expect(validate(JSON.parse(bytes.toString())), JSON.stringify(validate.errors)).toBe(true);
  });

  it('takes the id prefix for a parent too, and refuses prefixes that are not plain letters and digits', () => {
    const { manifest } = updateManifestFromImport(parseImportManifest(JSON.stringify(validImport())), {
      expiresDateTime: new Date('2030-01-01T00:00:00Z'), fileIdPrefix: 'p', detachedManifests: [{ manifest: child, file: childFile }],
    });
    expect(manifest.instructions.steps).toEqual([expect.objectContaining({ files: ['p0', 'p1'] }), { type: 'reference', detachedManifestFileId: 'p2' }]);
    const imported = parseImportManifest(JSON.stringify(childImport()));
    for (const prefix of ['', '../', 'a/b', 'x.y', '1file']) expect(() => childUpdateManifestFromImport(imported, { fileIdPrefix: prefix })).toThrow(/file id prefix/);
  });

  it('refuses a child with reference steps, and a parent naming one child twice', () => {
    expectRejected((text) => childUpdateManifestFromImport(parseImportManifest(text), { fileIdPrefix: 'c' }), JSON.stringify(validImport()), 'IMPORT_MANIFEST_INVALID', '/instructions/steps/1');
    const twice = validImport();
    (twice.instructions as { steps: unknown[] }).steps.push({ type: 'reference', updateId: { provider: 'Contoso', name: 'Sensor', version: '2.0' } });
    expectRejected(
      (text) => updateManifestFromImport(parseImportManifest(text), { expiresDateTime: new Date(), detachedManifests: [{ manifest: child, file: childFile }] }),
      JSON.stringify(twice), 'MANIFEST_FILE_REFERENCE_INVALID', '/instructions/steps/2/updateId',
    );
  });
});
