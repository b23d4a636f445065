import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FullUpdateManifest, TrustStore, UpdateDelivery, UpdateFile } from '@edge-ota/common';
import {
  childUpdateManifestFromImport, isDetachedManifestPointer, isReferenceStep, parseDetachedManifest, parseImportManifest, parseUpdateManifest,
  signUpdateManifest, updateManifestFromImport, verifyUpdateManifest, writeBundle,
} from '@edge-ota/common';
import { createDispatcher } from '../src/app.ts';
import type { Dispatcher } from '../src/app.ts';
import { LocalArtifactStore } from '../src/artifactStore.ts';
import { DETACHED_MANIFEST_FILE_ID, ManifestBuilder, jobIdFor } from '../src/manifestBuilder.ts';
import type { CatalogUpdate } from '../src/store.ts';
import { childManifestFileName } from '../src/updateManifests.ts';
import type { Harness, JsonLineProcess, TestKeys } from './support/harness.ts';
import { api, eventually, makeKeys, makeUpdate, startDispatcher, startHarness } from './support/harness.ts';
import { RecordingHub } from './support/recordingHub.ts';

// Multi-step updates (ADU's parent and child updates): a parent's reference steps name child updates, imported
// before it or with it; a job carries the parent's signed manifest, each child's manifest as a file of the parent
// (trusted by the parent's signed hash), and a URL for every file of parent and children, ids unique across them.

type UpdateRequest = ReturnType<typeof makeUpdate>;
interface UpdateIdParts { provider: string; name: string; version: string }

const idOf = (update: UpdateRequest): UpdateIdParts => update.importManifest.updateId as UpdateIdParts;
const formatted = (id: UpdateIdParts): string => `${id.provider}/${id.name}@${id.version}`;
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('base64');

/** The update with a reference step to each child after its own steps. */
function withReferences(update: UpdateRequest, ...children: UpdateIdParts[]): UpdateRequest {
  const steps = (update.importManifest.instructions as { steps: unknown[] }).steps;
  return { ...update, importManifest: { ...update.importManifest, instructions: { steps: [...steps, ...children.map((updateId) => ({ type: 'reference', updateId }))] } } };
}

/**
 * Uses a delivery the way a gateway must be able to: the manifest verifies under the trust store and parses (ADU's
 * schema included), a pointer's full manifest matches its signed hash, each reference step's file matches the
 * parent's hash and parses as a child manifest, file ids are unique across parent and children, and every id has a
 * URL whose bytes match the signed size and sha256 (and there are no other URLs).
 */
async function useDelivery(delivery: UpdateDelivery, trustStore: TrustStore, download: (url: string) => Promise<Buffer>): Promise<{ parent: FullUpdateManifest; children: FullUpdateManifest[] }> {
  const signed = verifyUpdateManifest(delivery.updateManifest, delivery.updateManifestSignature, trustStore).manifest;
  expect(parseUpdateManifest(delivery.updateManifest)).toEqual(signed);
  const pointer = isDetachedManifestPointer(signed);
  const parent = isDetachedManifestPointer(signed)
    ? parseDetachedManifest(signed, signed.detachedManifestFileId, await download(delivery.fileUrls[signed.detachedManifestFileId]!))
    : signed;
  const downloadChecked = async (fileId: string, file: UpdateFile): Promise<Buffer> => {
    const url = delivery.fileUrls[fileId];
    expect(url, `URL of ${fileId}`).toBeDefined();
    const bytes = await download(url!);
    expect(bytes.length, fileId).toBe(file.sizeInBytes);
    expect(sha256(bytes), fileId).toBe(file.hashes.sha256);
    return bytes;
  };
  const children: FullUpdateManifest[] = [];
  for (const step of parent.instructions.steps) {
    if (!isReferenceStep(step)) continue;
    const child = parseUpdateManifest(await downloadChecked(step.detachedManifestFileId, parent.files[step.detachedManifestFileId]!));
    if (isDetachedManifestPointer(child)) throw new Error('a child manifest is a pointer');
    expect(child.instructions.steps.some(isReferenceStep)).toBe(false);
    children.push(child);
  }
  const files = [parent, ...children].flatMap((manifest) => Object.entries(manifest.files));
  const ids = files.map(([fileId]) => fileId);
  expect(new Set(ids).size).toBe(ids.length);
  for (const [fileId, file] of files) await downloadChecked(fileId, file);
  expect(Object.keys(delivery.fileUrls).sort()).toEqual([...ids, ...(pointer ? [DETACHED_MANIFEST_FILE_ID] : [])].sort());
  return { parent, children };
}

describe('multi-step updates: import through the API', () => {
  let dir: string;
  let keys: TestKeys;
  let dispatcher: Dispatcher;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-multistep-api-'));
    keys = makeKeys(dir);
    dispatcher = await createDispatcher({ hubConnectionString: 'unused', hub: new RecordingHub(), dataDir: path.join(dir, 'data'), signingKey: keys.signingKey, trustStore: keys.trustStore });
  });
  afterAll(async () => {
    await dispatcher?.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const code = (r: { body: Record<string, unknown> }): string => (r.body.error as { code: string }).code;
  const details = (r: { body: Record<string, unknown> }): Record<string, unknown> => (r.body.error as { details: Record<string, unknown> }).details;
  const inCatalog = async (id: UpdateIdParts): Promise<boolean> => (await api(dispatcher.url, 'GET', `/updates/${encodeURIComponent(formatted(id))}`)).status === 200;

  it('imports a parent with its child in one request, then another parent naming that child from the catalog', async () => {
    const child = makeUpdate('2.0.0', 2, 256, 'ImportedChild');
    const parent = withReferences(makeUpdate('1.0.0', 1, 256, 'ImportedParent'), idOf(child));
    const imported = await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [child] });
    expect(imported.status, JSON.stringify(imported.body)).toBe(201);
    expect(imported.body).toMatchObject({ updateId: 'Contoso/ImportedParent@1.0.0', children: ['Contoso/ImportedChild@2.0.0'] });
    expect((await api(dispatcher.url, 'GET', `/updates/${encodeURIComponent('Contoso/ImportedChild@2.0.0')}`)).body).toMatchObject({ children: [], files: [{}, {}] });

    const second = withReferences(makeUpdate('1.1.0', 1, 256, 'ImportedParent'), idOf(child));
    const again = await api(dispatcher.url, 'POST', '/updates', second);
    expect(again.status, JSON.stringify(again.body)).toBe(201);
    expect(again.body.children).toEqual(['Contoso/ImportedChild@2.0.0']);
  });

  it('refuses a parent whose child is neither in the catalog nor in the request (UPDATE_CHILD_MISSING)', async () => {
    const parent = withReferences(makeUpdate('1.0.0', 1, 256, 'Orphan'), { provider: 'Contoso', name: 'Nowhere', version: '1.0' });
    const refused = await api(dispatcher.url, 'POST', '/updates', parent);
    expect(refused.status).toBe(422);
    expect(code(refused)).toBe('UPDATE_CHILD_MISSING');
    expect(details(refused)).toEqual({ field: '/importManifest/instructions/steps/1/updateId', updateId: 'Contoso/Nowhere@1.0' });
    expect(await inCatalog(idOf(parent))).toBe(false);
  });

  it('refuses nested references: a child with reference steps, in the request or from the catalog', async () => {
    const leaf = makeUpdate('1.0.0', 1, 64, 'NestedLeaf');
    const middle = withReferences(makeUpdate('1.0.0', 1, 64, 'NestedMiddle'), idOf(leaf));
    const top = withReferences(makeUpdate('1.0.0', 1, 64, 'NestedTop'), idOf(middle));
    const inRequest = await api(dispatcher.url, 'POST', '/updates', { ...top, children: [middle, leaf] });
    expect(code(inRequest)).toBe('UPDATE_INVALID');
    expect((inRequest.body.error as { message: string }).message).toMatch(/NestedMiddle@1\.0\.0 has reference steps itself/);
    expect(await inCatalog(idOf(leaf))).toBe(false);

    expect((await api(dispatcher.url, 'POST', '/updates', { ...middle, children: [leaf] })).status).toBe(201);
    const fromCatalog = await api(dispatcher.url, 'POST', '/updates', top);
    expect(code(fromCatalog)).toBe('UPDATE_INVALID');
    expect(details(fromCatalog)).toMatchObject({ updateId: 'Contoso/NestedMiddle@1.0.0' });
    expect(await inCatalog(idOf(top))).toBe(false);
  });

  it('refuses a parent that references itself, and a cycle between parent and child', async () => {
    const selfish = makeUpdate('1.0.0', 1, 64, 'Selfish');
    const self = await api(dispatcher.url, 'POST', '/updates', withReferences(selfish, idOf(selfish)));
    expect(code(self)).toBe('UPDATE_INVALID');
    expect((self.body.error as { message: string }).message).toMatch(/Selfish@1\.0\.0 references itself/);
    expect(await inCatalog(idOf(selfish))).toBe(false);

    const a = makeUpdate('1.0.0', 1, 64, 'CycleA');
    const b = makeUpdate('1.0.0', 1, 64, 'CycleB');
    const cycle = await api(dispatcher.url, 'POST', '/updates', { ...withReferences(a, idOf(b)), children: [withReferences(b, idOf(a))] });
    expect(code(cycle)).toBe('UPDATE_INVALID');
    expect(await inCatalog(idOf(a))).toBe(false);
    expect(await inCatalog(idOf(b))).toBe(false);
    const parentAsChild = await api(dispatcher.url, 'POST', '/updates', { ...withReferences(a, idOf(b)), children: [b, a] });
    expect(code(parentAsChild)).toBe('UPDATE_INVALID');
    expect(details(parentAsChild)).toEqual({ field: '/children/1', updateId: 'Contoso/CycleA@1.0.0' });
  });

  it('imports all or nothing, and refuses children it was not asked for, twice, or malformed', async () => {
    const child = makeUpdate('3.0.0', 1, 64, 'AtomicChild');
    const stray = makeUpdate('1.0.0', 1, 64, 'Stray');
    const parent = withReferences(makeUpdate('1.0.0', 1, 64, 'AtomicParent'), idOf(child));

    const unasked = await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [child, stray] });
    expect(code(unasked)).toBe('UPDATE_INVALID');
    expect(details(unasked)).toEqual({ field: '/children/1', updateId: 'Contoso/Stray@1.0.0' });
    expect(code(await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [child, child] }))).toBe('UPDATE_INVALID');
    const malformed = await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [{ ...child, importManifest: { ...child.importManifest, manifestVersion: 7 } }] });
    expect(code(malformed)).toBe('UPDATE_INVALID');
    expect(details(malformed).field).toBe('/children/0/importManifest');
    expect(code(await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [{ ...child, files: {} }] }))).toBe('UPDATE_FILE_MISSING');
    const notBase64 = await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [{ ...child, files: { 'payload-0.bin': '***' } }] });
    expect(details(notBase64).field).toBe('/children/0/files/payload-0.bin');
    expect(details(await api(dispatcher.url, 'POST', '/updates', { ...parent, children: {} })).field).toBe('/children');
    expect(await inCatalog(idOf(child))).toBe(false);
    expect(await inCatalog(idOf(parent))).toBe(false);

    // The child exists already: sending it again refuses the whole request, the parent included.
    expect((await api(dispatcher.url, 'POST', '/updates', child)).status).toBe(201);
    const repeated = await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [child] });
    expect(code(repeated)).toBe('UPDATE_EXISTS');
    expect(details(repeated)).toEqual({ updateId: 'Contoso/AtomicChild@3.0.0' });
    expect(await inCatalog(idOf(parent))).toBe(false);
    expect((await api(dispatcher.url, 'POST', '/updates', parent)).status).toBe(201);
  });

  it('refuses a signed bundle with reference steps (importing its children as catalog updates is not built)', async () => {
    const child = makeUpdate('2.0.0', 1, 128, 'BundledChild');
    const parent = withReferences(makeUpdate('1.0.0', 1, 128, 'BundledParent'), idOf(child));
    const childManifest = childUpdateManifestFromImport(parseImportManifest(JSON.stringify(child.importManifest)), { fileIdPrefix: 'step1file' });
    const childName = childManifestFileName(idOf(child));
    const work = mkdtempSync(path.join(dir, 'bundle-'));
    writeFileSync(path.join(work, childName), childManifest.bytes);
    writeFileSync(path.join(work, 'payload-0.bin'), Buffer.from(parent.files['payload-0.bin']!, 'base64'));
    const { bytes } = updateManifestFromImport(parseImportManifest(JSON.stringify(parent.importManifest)), {
      expiresDateTime: new Date(Date.now() + 86_400_000),
      detachedManifests: [{ manifest: childManifest.manifest, file: { filename: childName, sizeInBytes: childManifest.bytes.length, hashes: { sha256: sha256(childManifest.bytes) } } }],
    });
    const bundleFile = path.join(work, 'parent.otabundle');
    // The bundle carries the child's payload under children/<file id of the child manifest>/.
    const childManifestFileId = Object.entries(parseUpdateManifest(bytes).files).find(([, f]) => f.filename === childName)![0];
    mkdirSync(path.join(work, 'child'));
    const childFiles = Object.fromEntries(Object.entries(child.files).map(([name, base64]) => {
      writeFileSync(path.join(work, 'child', name), Buffer.from(base64, 'base64'));
      return [name, path.join(work, 'child', name)];
    }));
    await writeBundle({
      manifest: bytes,
      signature: signUpdateManifest(bytes, keys.signingKey),
      filePaths: { 'payload-0.bin': path.join(work, 'payload-0.bin'), [childName]: path.join(work, childName) },
      childFilePaths: { [childManifestFileId]: childFiles },
    }, bundleFile);
    const refused = await api(dispatcher.url, 'POST', '/updates/bundle', readFileSync(bundleFile), 'application/octet-stream');
    expect(code(refused)).toBe('UPDATE_UNSUPPORTED');
    expect((refused.body.error as { message: string }).message).toMatch(/importing a bundle with reference steps is not supported/);
    expect(await inCatalog(idOf(parent))).toBe(false);
  });
});

describe('multi-step updates: what the manifest builder issues per job', () => {
  let dir: string;
  let keys: TestKeys;
  let artifacts: LocalArtifactStore;
  let builder: ManifestBuilder;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'dispatcher-multistep-builder-'));
    keys = makeKeys(dir);
    artifacts = new LocalArtifactStore(path.join(dir, 'artifacts'), 'http://127.0.0.1:1');
    builder = new ManifestBuilder({ signingKey: keys.signingKey, artifacts });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function catalogEntry(update: UpdateRequest): Promise<CatalogUpdate> {
    const manifest = parseImportManifest(JSON.stringify(update.importManifest));
    const files = [];
    for (const file of manifest.files) {
      const artifact = await artifacts.put(Buffer.from(update.files[file.filename]!, 'base64'));
      files.push({ filename: file.filename, sizeInBytes: file.sizeInBytes, sha256: file.hashes.sha256, artifactKey: artifact.key });
    }
    const id = idOf(update);
    return { updateId: formatted(id), ...id, importManifest: manifest, files, source: 'import', importedAt: '' };
  }
  /** Reads what a signed URL of the store serves (its HTTP route is tested on the emulator below). */
  const download = async (url: string): Promise<Buffer> => {
    const parsed = new URL(url);
    const chunks: Buffer[] = [];
    for await (const chunk of artifacts.open(parsed.pathname.split('/')[2]!, parsed.searchParams.get('se'), parsed.searchParams.get('sig')).open()) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };

  // Every manifest has files named payload-0.bin, payload-1.bin...: only the ids tell them apart.
  const childA = makeUpdate('2.0.0', 2, 100, 'SensorFw');
  const childB = makeUpdate('3.1', 1, 50, 'Modem');
  const parentRequest = withReferences(makeUpdate('1.0.0', 2, 80, 'Gateway'), idOf(childA), idOf(childB));

  it('signs the parent, ships each child manifest as a parent file, ids unique across them, a URL for every file', async () => {
    const [parent, a, b] = await Promise.all([catalogEntry(parentRequest), catalogEntry(childA), catalogEntry(childB)]);
    const built = await builder.build(parent, { deviceId: 'dev-1', gatewayId: 'gw' }, [a, b]);
    expect(built.twin).toBe(built.method);
    const { parent: issued, children } = await useDelivery(built.method, keys.trustStore, download);
    expect(issued.instructions.steps).toEqual([
      { handler: 'microsoft/script:1', files: ['file0', 'file1'], handlerProperties: { installedCriteria: '1.0.0' } },
      { type: 'reference', detachedManifestFileId: 'file2' },
      { type: 'reference', detachedManifestFileId: 'file3' },
    ]);
    expect(issued.files.file2!.filename).toBe('contoso.sensorfw.2.0.0.updatemanifest.json');
    expect(issued.edgeOta?.manifestId).toBe(built.jobId);
    expect(children.map((c) => c.updateId)).toEqual([idOf(childA), idOf(childB)]);
    expect(children.map((c) => Object.keys(c.files))).toEqual([['step1file0', 'step1file1'], ['step2file0']]);
    expect(children[0]!.instructions.steps).toEqual([{ handler: 'microsoft/script:1', files: ['step1file0', 'step1file1'], handlerProperties: { installedCriteria: '2.0.0' } }]);
    expect(children[0]!.compatibility).toEqual([{ manufacturer: 'Contoso', model: 'SensorFw' }]);
    expect(children.every((c) => c.edgeOta === undefined)).toBe(true);
    // The same name, other bytes: the child's payload-0.bin is not the parent's.
    expect(issued.files.file0!.filename).toBe(children[0]!.files.step1file0!.filename);
    expect(issued.files.file0!.hashes.sha256).not.toBe(children[0]!.files.step1file0!.hashes.sha256);
  });

  it('gives a child the same manifest bytes in every job, so it is stored and cached once', async () => {
    const [parent, a, b] = await Promise.all([catalogEntry(parentRequest), catalogEntry(childA), catalogEntry(childB)]);
    const one = await builder.build(parent, { deviceId: 'dev-1', gatewayId: 'gw' }, [a, b]);
    const other = await builder.build(parent, { deviceId: 'dev-2', gatewayId: 'gw' }, [a, b], new Date(Date.now() + 60_000));
    expect(one.method.updateManifest).not.toBe(other.method.updateManifest);
    const artifactOf = (url: string): string => new URL(url).pathname.split('/')[2]!;
    expect(artifactOf(one.method.fileUrls.file2!)).toBe(artifactOf(other.method.fileUrls.file2!));
    expect(artifactOf(one.method.fileUrls.file3!)).toBe(artifactOf(other.method.fileUrls.file3!));
  });

  it('sends a pointer to the twin when too big, with the URLs of every file of parent and children beside it', async () => {
    const big = withReferences(makeUpdate('1.0.1', 2, 80, 'Gateway'), idOf(childA), idOf(childB));
    (big.importManifest.instructions as { steps: Array<{ handlerProperties?: Record<string, string> }> }).steps[0]!.handlerProperties!.arguments = 'x'.repeat(6000);
    const [parent, a, b] = await Promise.all([catalogEntry(big), catalogEntry(childA), catalogEntry(childB)]);
    const built = await builder.build(parent, { deviceId: 'dev-1', gatewayId: 'gw' }, [a, b]);
    expect(isDetachedManifestPointer(parseUpdateManifest(built.twin.updateManifest))).toBe(true);
    const { children } = await useDelivery(built.twin, keys.trustStore, download);
    expect(children).toHaveLength(2);
    await useDelivery(built.method, keys.trustStore, download);
  });

  it('issues an update without reference steps exactly as it always was', async () => {
    const plain = await catalogEntry(makeUpdate('4.0.0', 2, 64, 'Plain'));
    const now = new Date('2026-11-22T10:00:00.000Z');
    const built = await builder.build(plain, { deviceId: 'dev-1', gatewayId: 'gw' }, [], now);
    const expected = updateManifestFromImport(plain.importManifest, {
      expiresDateTime: new Date(now.getTime() + 30 * 24 * 3600_000), manifestId: jobIdFor('dev-1', plain.updateId), createdDateTime: now,
    });
    expect(built.method.updateManifest).toBe(expected.bytes.toString('utf8'));
    expect(Object.keys(built.method.fileUrls)).toEqual(['file0', 'file1']);
  });

  it('refuses to build a parent without its children', async () => {
    const parent = await catalogEntry(parentRequest);
    await expect(builder.build(parent, { deviceId: 'dev-1', gatewayId: 'gw' })).rejects.toThrow(/names Contoso\/SensorFw@2\.0\.0, which was not supplied/);
  });
});

describe('multi-step updates on the emulator', () => {
  let harness: Harness;
  let dispatcher: Dispatcher;
  let orchestrator: JsonLineProcess;
  const child = makeUpdate('2.0.0', 2, 4096, 'LineSensor');
  const parent = withReferences(makeUpdate('1.0.0', 1, 4096, 'LineGateway'), idOf(child));

  beforeAll(async () => {
    harness = await startHarness();
    await harness.createGateway('gw-ms');
    orchestrator = await harness.startOrchestrator('gw-ms');
    dispatcher = await startDispatcher(harness);
  });
  afterAll(async () => {
    await dispatcher?.close();
    await harness?.stop();
  });

  it('assigns a parent to a device; its gateway gets parent and child, fetches every file by its URL, and the job succeeds', async () => {
    const imported = await api(dispatcher.url, 'POST', '/updates', { ...parent, children: [child] });
    expect(imported.status, JSON.stringify(imported.body)).toBe(201);
    expect((await api(dispatcher.url, 'POST', '/devices', { deviceId: 'line-sensor-1', parentId: 'gw-ms', updateId: 'Contoso/LineGateway@1.0.0' })).status).toBe(201);

    const fetchedChild = await orchestrator.waitFor((e) => e.type === 'childManifest', 'the child manifest fetched at gw-ms/otaOrchestrator', 30_000);
    expect(fetchedChild).toMatchObject({ fileId: 'file1', updateId: idOf(child), fileIds: ['step1file0', 'step1file1'] });
    type View = { installedVersion: string | null; currentJob: { jobId: string; state: string } | null };
    const done = await eventually(async () => {
      const view = (await api(dispatcher.url, 'GET', '/devices/line-sensor-1')).body as unknown as View;
      return view.currentJob?.state === 'succeeded' ? view : undefined;
    }, 30_000, 'line-sensor-1 succeeded');
    expect(done.installedVersion).toBe('1.0.0');
    expect(((await api(dispatcher.url, 'GET', '/status/updates')).body.updates as Record<string, Record<string, number>>)['Contoso/LineGateway@1.0.0']).toEqual({ succeeded: 1 });

    // The delivery as recorded, used over real HTTP from the dispatcher's artifact URLs.
    const delivery = JSON.parse(dispatcher.store.getDelivery(done.currentJob!.jobId)!.payload) as UpdateDelivery;
    const download = async (url: string): Promise<Buffer> => {
      expect(url.startsWith(`${dispatcher.url}/artifacts/`)).toBe(true);
      const response = await fetch(url);
      expect(response.status).toBe(200);
      return Buffer.from(await response.arrayBuffer());
    };
    const { parent: issued, children } = await useDelivery(delivery, harness.keys.trustStore, download);
    expect(Object.keys(issued.files)).toEqual(['file0', 'file1']);
    expect(children.map((c) => c.updateId)).toEqual([idOf(child)]);
  });
});
