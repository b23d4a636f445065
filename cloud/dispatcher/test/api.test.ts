import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  isDetachedManifestPointer, parseDetachedManifest, parseImportManifest, signUpdateManifest, updateManifestFromImport, verifyUpdateManifest, writeBundle,
} from '@edge-ota/common';
import { createDispatcher } from '../src/app.ts';
import { dispatcherErrors } from '../src/errors.ts';
import type { Dispatcher } from '../src/app.ts';
import { LocalArtifactStore } from '../src/artifactStore.ts';
import { DETACHED_MANIFEST_FILE_ID, ManifestBuilder, jobIdFor } from '../src/manifestBuilder.ts';
import { requestSchemas } from '../src/requestSchemas.ts';
import type { CatalogUpdate } from '../src/store.ts';
import type { TestKeys } from './support/harness.ts';
import { api, makeKeys, makeUpdate } from './support/harness.ts';
import { RecordingHub } from './support/recordingHub.ts';

// The API over real loopback HTTP with a recording stand-in for IoT Hub: every bad request gets a 4xx with a
// stable code and the process keeps serving. Plus the manifest builder's detached pointer and signed URLs.

describe('device-manager API: bad input', () => {
  let dir: string;
  let keys: TestKeys;
  let dispatcher: Dispatcher;
  const hub = new RecordingHub();
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-api-'));
    keys = makeKeys(dir);
    dispatcher = await createDispatcher({ hubConnectionString: 'unused', hub, dataDir: path.join(dir, 'data'), signingKey: keys.signingKey, trustStore: keys.trustStore });
  });
  afterAll(async () => {
    await dispatcher?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const code = (r: { body: Record<string, unknown> }): string => (r.body.error as { code: string }).code;

  it.each([
    [{ deviceId: 5 }, '/deviceId'],
    [{ deviceId: 'a b' }, '/deviceId'],
    [{}, '/'],
    [{ deviceId: 'x', isGateway: 'yes' }, '/isGateway'],
    [{ deviceId: 'x', tags: { a: 1 } }, '/tags/a'],
    [{ deviceId: 'x', extra: true }, '/extra'],
    [[], '/'],
  ])('POST /devices %j -> 400 REQUEST_INVALID at %s', async (body, field) => {
    const response = await api(dispatcher.url, 'POST', '/devices', body);
    expect(response.status).toBe(400);
    expect(code(response)).toBe('REQUEST_INVALID');
    expect((response.body.error as { details: { field: string } }).details.field).toBe(field);
  });

  it('refuses bodies that are not JSON, the wrong media type, unknown routes, methods and ids', async () => {
    expect(code(await api(dispatcher.url, 'POST', '/devices', '{"deviceId":'))).toBe('BODY_NOT_JSON');
    expect(code(await api(dispatcher.url, 'POST', '/devices', 'deviceId=x', 'text/plain'))).toBe('UNSUPPORTED_MEDIA_TYPE');
    expect(code(await api(dispatcher.url, 'GET', '/nowhere'))).toBe('NOT_FOUND');
    expect(code(await api(dispatcher.url, 'DELETE', '/devices'))).toBe('METHOD_NOT_ALLOWED');
    expect(code(await api(dispatcher.url, 'GET', '/devices/ghost'))).toBe('DEVICE_NOT_FOUND');
    expect(code(await api(dispatcher.url, 'GET', '/devices?limit=0'))).toBe('REQUEST_INVALID');
    expect(code(await api(dispatcher.url, 'GET', '/devices/%E0%A4%A'))).toBe('REQUEST_INVALID');
    expect(code(await api(dispatcher.url, 'POST', '/devices', { deviceId: 'x', updateId: 'No/Such@1.0' }))).toBe('UPDATE_NOT_FOUND');
    expect(code(await api(dispatcher.url, 'PUT', '/groups/bad%20group', { updateId: 'No/Such@1.0' }))).toBe('GROUP_INVALID');
    expect(code(await api(dispatcher.url, 'PUT', '/groups/g', { updateId: 'No/Such@1.0' }))).toBe('UPDATE_NOT_FOUND');
    expect(hub.created).toEqual([]);
    expect((await api(dispatcher.url, 'GET', '/health')).status).toBe(200);
  });

  it('registers a device once and says DEVICE_EXISTS the second time', async () => {
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'dev-1', parentId: 'gw', tags: { site: 'a' } })).status).toBe(201);
    expect(code(await api(dispatcher.url, 'POST', '/devices', { deviceId: 'dev-1' }))).toBe('DEVICE_EXISTS');
    expect(hub.created).toEqual(['dev-1']);
    const listed = (await api(dispatcher.url, 'GET', '/devices')).body.devices as Array<{ deviceId: string; tags: Record<string, string> }>;
    expect(listed).toEqual([expect.objectContaining({ deviceId: 'dev-1', tags: { site: 'a' } })]);
  });

  it('imports updates, refusing bad manifests, missing or altered files and repeats with their codes', async () => {
    const update = makeUpdate('1.0.0');
    const noFiles = await api(dispatcher.url, 'POST', '/updates', { importManifest: update.importManifest, files: {} });
    expect(code(noFiles)).toBe('UPDATE_FILE_MISSING');
    const altered = await api(dispatcher.url, 'POST', '/updates', { ...update, files: { 'payload-0.bin': Buffer.from('other').toString('base64') } });
    expect(code(altered)).toBe('UPDATE_INVALID');
    const badManifest = await api(dispatcher.url, 'POST', '/updates', { ...update, importManifest: { ...update.importManifest, manifestVersion: 7 } });
    expect(code(badManifest)).toBe('UPDATE_INVALID');
    expect((badManifest.body.error as { details: { otaCode: string } }).details.otaCode).toMatch(/MANIFEST|IMPORT/);
    expect(code(await api(dispatcher.url, 'POST', '/updates', { ...update, files: { 'payload-0.bin': '***' } }))).toBe('REQUEST_INVALID');
    const ok = await api(dispatcher.url, 'POST', '/updates', update);
    expect(ok.status).toBe(201);
    expect(ok.body.updateId).toBe('Contoso/Sensor@1.0.0');
    expect(code(await api(dispatcher.url, 'POST', '/updates', update))).toBe('UPDATE_EXISTS');
    expect((await api(dispatcher.url, 'GET', `/updates/${encodeURIComponent('Contoso/Sensor@1.0.0')}`)).status).toBe(200);
  });

  it('imports a signed offline bundle and refuses one signed under an unknown root', async () => {
    const update = makeUpdate('4.0.0', 1, 1000, 'Bundled');
    const payloadDir = mkdtempSync(path.join(dir, 'payload-'));
    const filePath = path.join(payloadDir, 'payload-0.bin');
    writeFileSync(filePath, Buffer.from(update.files['payload-0.bin']!, 'base64'));
    const { bytes } = updateManifestFromImport(parseImportManifest(Buffer.from(JSON.stringify(update.importManifest))), { expiresDateTime: new Date(Date.now() + 86_400_000) });
    const bundleFile = path.join(dir, 'u.otabundle');
    await writeBundle({ manifest: bytes, signature: signUpdateManifest(bytes, keys.signingKey), filePaths: { 'payload-0.bin': filePath } }, bundleFile);
    const imported = await api(dispatcher.url, 'POST', '/updates/bundle', readFileSync(bundleFile), 'application/octet-stream');
    expect(imported.status).toBe(201);
    expect(imported.body).toMatchObject({ updateId: 'Contoso/Bundled@4.0.0', source: 'bundle' });

    const stranger = makeKeys(mkdtempSync(path.join(dir, 'stranger-')));
    const foreign = path.join(dir, 'f.otabundle');
    await writeBundle({ manifest: bytes, signature: signUpdateManifest(bytes, stranger.signingKey), filePaths: { 'payload-0.bin': filePath } }, foreign);
    // The stranger's files use the same kid as ours: the root's signature is what fails.
    const refused = await api(dispatcher.url, 'POST', '/updates/bundle', readFileSync(foreign), 'application/octet-stream');
    expect(code(refused)).toBe('UPDATE_INVALID');
    expect(code(await api(dispatcher.url, 'POST', '/updates/bundle', Buffer.from('not a tar'), 'application/octet-stream'))).toBe('UPDATE_INVALID');
  });

  it('keeps the request schemas and openapi.yaml in step', () => {
    const openapi = readFileSync(new URL('../openapi.yaml', import.meta.url), 'utf8');
    for (const [name, schema] of Object.entries(requestSchemas)) {
      expect(openapi).toContain(`    ${name}:`);
      for (const property of Object.keys(schema.properties)) expect(openapi).toContain(`        ${property}:`);
    }
    const documented = /ErrorCode:\s+type: string\s+enum: \[([^\]]+)\]/.exec(openapi)![1]!.split(',').map((c) => c.trim());
    expect(documented).toEqual(expect.arrayContaining(Object.keys(dispatcherErrors)));
  });
});

describe('ManifestBuilder and LocalArtifactStore', () => {
  let dir: string;
  let keys: TestKeys;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-builder-'));
    keys = makeKeys(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function catalogUpdate(artifacts: LocalArtifactStore, fileCount: number, argumentBytes = 0): Promise<CatalogUpdate> {
    const { importManifest, files } = makeUpdate('5.0.0', fileCount, 64);
    // Long handler arguments are one way a manifest outgrows a 4 KB twin value.
    if (argumentBytes) (importManifest.instructions as { steps: Array<{ handlerProperties: Record<string, string> }> }).steps[0]!.handlerProperties.arguments = 'x'.repeat(argumentBytes);
    const manifest = parseImportManifest(Buffer.from(JSON.stringify(importManifest)));
    const stored = [];
    for (const file of manifest.files) {
      const artifact = await artifacts.put(Buffer.from(files[file.filename]!, 'base64'));
      stored.push({ filename: file.filename, sizeInBytes: file.sizeInBytes, sha256: file.hashes.sha256, artifactKey: artifact.key });
    }
    return { updateId: 'Contoso/Sensor@5.0.0', provider: 'Contoso', name: 'Sensor', version: '5.0.0', importManifest: manifest, files: stored, source: 'import', importedAt: '' };
  }

  it('sends a small manifest whole, and a large one to the twin as a signed detached pointer', async () => {
    const artifacts = new LocalArtifactStore(path.join(dir, 'artifacts'), 'http://127.0.0.1:1');
    const builder = new ManifestBuilder({ signingKey: keys.signingKey, artifacts });
    const small = await builder.build(await catalogUpdate(artifacts, 1), { deviceId: 'd', gatewayId: 'gw' });
    expect(small.jobId).toBe(jobIdFor('d', 'Contoso/Sensor@5.0.0'));
    expect(small.twin).toBe(small.method);
    expect(small.method.target).toEqual({ deviceId: 'd' });
    expect(verifyUpdateManifest(small.method.updateManifest, small.method.updateManifestSignature, keys.trustStore).manifest.edgeOta?.manifestId).toBe(small.jobId);

    const large = await builder.build(await catalogUpdate(artifacts, 10, 6000), { deviceId: 'd', gatewayId: 'gw' });
    expect(Buffer.byteLength(large.method.updateManifest)).toBeGreaterThan(4096);
    const pointer = verifyUpdateManifest(large.twin.updateManifest, large.twin.updateManifestSignature, keys.trustStore).manifest;
    expect(isDetachedManifestPointer(pointer)).toBe(true);
    expect(Object.values(large.twin).every((v) => typeof v !== 'string' || Buffer.byteLength(v) <= 4096)).toBe(true);
    // The detached manifest comes from its signed URL and matches the pointer's hash.
    const url = new URL(large.twin.fileUrls[DETACHED_MANIFEST_FILE_ID]!);
    const key = url.pathname.split('/')[2]!;
    const download = artifacts.open(key, url.searchParams.get('se'), url.searchParams.get('sig'));
    const chunks: Buffer[] = [];
    for await (const chunk of download.open()) chunks.push(chunk as Buffer);
    if (!isDetachedManifestPointer(pointer)) throw new Error('not a pointer');
    const full = parseDetachedManifest(pointer, DETACHED_MANIFEST_FILE_ID, Buffer.concat(chunks));
    expect(Object.keys(full.files)).toHaveLength(10);
    for (const fileId of Object.keys(full.files)) expect(large.twin.fileUrls[fileId]).toBeDefined();
  });

  it('refuses tampered, foreign and expired download URLs', async () => {
    const artifacts = new LocalArtifactStore(path.join(dir, 'artifacts2'), 'http://127.0.0.1:1');
    const stored = await artifacts.put(Buffer.from('hello'));
    const good = new URL(artifacts.signedUrl(stored.key, 'h.txt', new Date(Date.now() + 60_000)));
    expect(artifacts.open(stored.key, good.searchParams.get('se'), good.searchParams.get('sig')).sizeInBytes).toBe(5);
    expect(() => artifacts.open(stored.key, String(Number(good.searchParams.get('se')) + 1), good.searchParams.get('sig'))).toThrow(/invalid/);
    expect(() => artifacts.open('0'.repeat(64), good.searchParams.get('se'), good.searchParams.get('sig'))).toThrow(/invalid/);
    const expired = new URL(artifacts.signedUrl(stored.key, 'h.txt', new Date(Date.now() - 1000)));
    expect(() => artifacts.open(stored.key, expired.searchParams.get('se'), expired.searchParams.get('sig'))).toThrow(/expired/);
  });
});
