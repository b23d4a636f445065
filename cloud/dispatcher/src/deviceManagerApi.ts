import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { formatUpdateId } from '@edge-ota/common';
import type { ArtifactDownloads } from './artifactDownloads.ts';
import type { LocalArtifactStore } from './artifactStore.ts';
import type { Catalog, UpdateImport } from './catalog.ts';
import type { DeploymentPlanner } from './deploymentPlanner.ts';
import { DispatcherError, isDispatcherError } from './errors.ts';
import type { EventGridAdapter } from './eventGridAdapter.ts';
import type { EventIngestion } from './eventIngestion.ts';
import type { IdentityHub } from './hubClient.ts';
import { checkRequest, requestSchemas } from './requestSchemas.ts';
import type { StatusViews } from './statusViews.ts';
import type { CatalogUpdate, DispatcherStore } from './store.ts';

// The device-manager REST API (openapi.yaml), the Event Grid webhook and the artifact downloads, on one
// node:http handler. Every refusal is JSON `{error: {code, message}}` with a code from errors.ts; an
// unexpected failure is a 500 without internals, never a crash of the process.

export interface ApiContext {
  store: DispatcherStore;
  hub: IdentityHub;
  catalog: Catalog;
  planner: DeploymentPlanner;
  views: StatusViews;
  ingestion: EventIngestion;
  eventGrid: EventGridAdapter;
  artifacts: LocalArtifactStore | undefined;
  /** Downloads served from `artifacts` since start. */
  downloads: ArtifactDownloads;
  log: (line: string) => void;
  maxJsonBytes: number;
  maxBundleBytes: number;
}

type ApiAnswer = { status: number; body: unknown };
type Handler = (request: IncomingMessage, params: string[], url: URL) => Promise<ApiAnswer | undefined>;

interface Route {
  method: string;
  pattern: RegExp;
  handler: Handler;
}

async function readBody(request: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(request.headers['content-length'] ?? 0);
  if (declared > limit) throw new DispatcherError('BODY_TOO_LARGE', `the body exceeds ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new DispatcherError('BODY_TOO_LARGE', `the body exceeds ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

async function readJson(request: IncomingMessage, limit: number): Promise<unknown> {
  const type = request.headers['content-type'] ?? '';
  if (!/^application\/(.+\+)?json\b/i.test(type)) throw new DispatcherError('UNSUPPORTED_MEDIA_TYPE', 'send application/json');
  const bytes = await readBody(request, limit);
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new DispatcherError('BODY_NOT_JSON');
  }
}

function updateView(update: CatalogUpdate): Record<string, unknown> {
  return {
    updateId: update.updateId,
    provider: update.provider,
    name: update.name,
    version: update.version,
    source: update.source,
    compatibility: update.importManifest.compatibility,
    // The updates its reference steps install, in step order.
    children: update.importManifest.instructions.steps.flatMap((step) => (step.type === 'reference' ? [formatUpdateId(step.updateId)] : [])),
    files: update.files.map((f) => ({ filename: f.filename, sizeInBytes: f.sizeInBytes, sha256: f.sha256 })),
    importedAt: update.importedAt,
  };
}

function limitParam(url: URL, fallback: number, max: number): number {
  const raw = url.searchParams.get('limit');
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new DispatcherError('REQUEST_INVALID', `limit must be an integer from 1 to ${max}`, { field: 'limit' });
  return n;
}

export function createRequestHandler(ctx: ApiContext): (request: IncomingMessage, response: ServerResponse) => void {
  const routes: Route[] = [];
  const route = (method: string, pattern: RegExp, handler: Handler): void => {
    routes.push({ method, pattern, handler });
  };

  route('GET', /^\/health$/, () => Promise.resolve({ status: 200, body: { ok: true } }));

  route('POST', /^\/devices$/, async (request) => {
    const body = await readJson(request, ctx.maxJsonBytes);
    checkRequest(requestSchemas.CreateDevice, body);
    const input = body as { deviceId: string; parentId?: string; isGateway?: boolean; group?: string; tags?: Record<string, string>; updateId?: string };
    if (input.updateId && !ctx.catalog.get(input.updateId)) throw new DispatcherError('UPDATE_NOT_FOUND', `${input.updateId} is not in the catalog`, { updateId: input.updateId });
    if (input.parentId === input.deviceId) throw new DispatcherError('REQUEST_INVALID', '/parentId: a device cannot be its own parent', { field: '/parentId' });
    const device = {
      deviceId: input.deviceId, parentId: input.parentId, isGateway: input.isGateway ?? false, group: input.group, tags: input.tags ?? {},
      assignedUpdateId: input.updateId, lifecycle: 'registered' as const, lifecycleAt: undefined, installedVersion: undefined, createdAt: new Date().toISOString(),
    };
    // The record (with its assignment) exists before the identity, so the lifecycle event always finds it.
    if (!ctx.store.insertDevice(device)) throw new DispatcherError('DEVICE_EXISTS', `${input.deviceId} exists already`);
    try {
      await ctx.hub.createDevice({ deviceId: input.deviceId, isGateway: device.isGateway, ...(input.parentId ? { parentId: input.parentId } : {}) });
    } catch (error) {
      ctx.store.removeDevice(input.deviceId);
      throw error;
    }
    return { status: 201, body: ctx.views.device(ctx.store.getDevice(input.deviceId)!) };
  });

  route('GET', /^\/devices$/, (_request, _params, url) => {
    const limit = limitParam(url, 100, 1000);
    const group = url.searchParams.get('group') ?? undefined;
    const after = url.searchParams.get('after') ?? undefined;
    const devices = ctx.store.listDevices({ limit, ...(group ? { group } : {}), ...(after ? { after } : {}) });
    return Promise.resolve({
      status: 200,
      body: { devices: devices.map((d) => ctx.views.device(d)), next: devices.length === limit ? devices[devices.length - 1]!.deviceId : null },
    });
  });

  const requireDevice = (id: string): ReturnType<DispatcherStore['getDevice']> & object => {
    const device = ctx.store.getDevice(id);
    if (!device) throw new DispatcherError('DEVICE_NOT_FOUND', `no device ${id}`, { deviceId: id });
    return device;
  };
  route('GET', /^\/devices\/([^/]+)$/, (_r, [id]) => Promise.resolve({ status: 200, body: ctx.views.device(requireDevice(id!)) }));
  route('GET', /^\/devices\/([^/]+)\/jobs$/, (_r, [id]) => {
    requireDevice(id!);
    return Promise.resolve({ status: 200, body: { jobs: ctx.views.jobs(id!) } });
  });
  route('GET', /^\/devices\/([^/]+)\/history$/, (_r, [id], url) => {
    requireDevice(id!);
    return Promise.resolve({ status: 200, body: { history: ctx.store.history(id!, limitParam(url, 500, 5000)) } });
  });

  // Reassignment: the device's own update (PUT) or back to its group's rule (DELETE). What was not delivered yet is
  // cancelled and the update now assigned is planned as a new job; setting what is already assigned changes nothing.
  const reassign = async (deviceId: string, updateId: string | undefined): Promise<ApiAnswer> => {
    const device = requireDevice(deviceId);
    if (device.assignedUpdateId !== updateId) {
      ctx.store.reassignDevice(deviceId, updateId);
      ctx.store.addHistory(deviceId, {
        at: new Date().toISOString(), jobId: undefined, kind: 'delivery', step: undefined, status: 'reassigned', resultCode: undefined, extendedResultCode: undefined,
        details: updateId ? `assigned ${updateId} (was ${device.assignedUpdateId ?? 'the group rule'})` : `assignment ${device.assignedUpdateId ?? ''} removed: the group rule applies`,
      });
    }
    const plan = device.assignedUpdateId !== updateId ? await ctx.planner.replan(deviceId, 'reassigned') : await ctx.planner.plan(deviceId);
    return { status: 200, body: { device: ctx.views.device(ctx.store.getDevice(deviceId)!), plan } };
  };
  route('PUT', /^\/devices\/([^/]+)\/assignment$/, async (request, [id]) => {
    const body = await readJson(request, ctx.maxJsonBytes);
    checkRequest(requestSchemas.Assignment, body);
    const { updateId } = body as { updateId: string };
    requireDevice(id!);
    if (!ctx.catalog.get(updateId)) throw new DispatcherError('UPDATE_NOT_FOUND', `${updateId} is not in the catalog`, { updateId });
    return reassign(id!, updateId);
  });
  route('DELETE', /^\/devices\/([^/]+)\/assignment$/, (_request, [id]) => reassign(id!, undefined));

  // A group's rule applies at once to its live devices that have no update of their own: a rollout to the group.
  route('PUT', /^\/groups\/([^/]+)$/, async (request, [group]) => {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(group!)) throw new DispatcherError('GROUP_INVALID');
    const body = await readJson(request, ctx.maxJsonBytes);
    checkRequest(requestSchemas.GroupRule, body);
    const { updateId } = body as { updateId: string };
    if (!ctx.catalog.get(updateId)) throw new DispatcherError('UPDATE_NOT_FOUND', `${updateId} is not in the catalog`, { updateId });
    ctx.store.setGroupRule(group!, updateId);
    const rollout = { devices: 0, planned: 0, alreadyPlanned: 0, notLive: 0 };
    let after: string | undefined;
    for (;;) {
      const page = ctx.store.listDevices({ group: group!, limit: 500, ...(after === undefined ? {} : { after }) });
      if (page.length === 0) break;
      for (const device of page) {
        if (device.assignedUpdateId !== undefined) continue;
        rollout.devices += 1;
        const outcome = await ctx.planner.replan(device.deviceId, `group ${group!} now has ${updateId}`);
        if (outcome.planned) rollout.planned += 1;
        else if (outcome.reason === 'already-planned') rollout.alreadyPlanned += 1;
        else if (outcome.reason === 'device-not-live') rollout.notLive += 1;
      }
      after = page[page.length - 1]!.deviceId;
    }
    return { status: 200, body: { group, updateId, rollout } };
  });
  route('GET', /^\/groups$/, () => Promise.resolve({ status: 200, body: { groups: ctx.store.listGroupRules() } }));

  route('POST', /^\/updates$/, async (request) => {
    const body = await readJson(request, ctx.maxJsonBytes);
    checkRequest(requestSchemas.ImportUpdate, body);
    type Imported = { importManifest: Record<string, unknown>; files: Record<string, string> };
    const input = body as Imported & { children?: Imported[] };
    const decoded = (update: Imported, at: string): UpdateImport => {
      const files = new Map<string, Buffer>();
      for (const [name, base64] of Object.entries(update.files)) {
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(base64)) throw new DispatcherError('REQUEST_INVALID', `${at}/files/${name}: must be base64`, { field: `${at}/files/${name}` });
        files.set(name, Buffer.from(base64, 'base64'));
      }
      return { manifest: Buffer.from(JSON.stringify(update.importManifest)), files };
    };
    const parent = decoded(input, '');
    const children = (input.children ?? []).map((child, i) => decoded(child, `/children/${i}`));
    const update = await ctx.catalog.importManifest(parent.manifest, parent.files, children);
    return { status: 201, body: updateView(update) };
  });
  route('POST', /^\/updates\/bundle$/, async (request) => {
    if (!/^application\/(octet-stream|x-tar)\b/i.test(request.headers['content-type'] ?? '')) throw new DispatcherError('UNSUPPORTED_MEDIA_TYPE', 'send the bundle as application/octet-stream');
    const bytes = await readBody(request, ctx.maxBundleBytes);
    const { Readable } = await import('node:stream');
    const update = await ctx.catalog.importBundle(Readable.from([bytes]));
    return { status: 201, body: updateView(update) };
  });
  route('GET', /^\/updates$/, () => Promise.resolve({ status: 200, body: { updates: ctx.catalog.list().map(updateView) } }));
  route('GET', /^\/updates\/([^/]+)$/, (_r, [id]) => {
    const update = ctx.catalog.get(id!);
    if (!update) throw new DispatcherError('NOT_FOUND', `no update ${id}`);
    return Promise.resolve({ status: 200, body: updateView(update) });
  });

  route('GET', /^\/status\/updates$/, () => Promise.resolve({ status: 200, body: { updates: ctx.views.byUpdate() } }));
  route('GET', /^\/status\/groups$/, () => Promise.resolve({ status: 200, body: { groups: ctx.views.byGroup() } }));
  route('GET', /^\/status\/failed$/, (_r, _p, url) => Promise.resolve({ status: 200, body: { failed: ctx.views.failed(limitParam(url, 100, 1000)) } }));
  route('GET', /^\/status\/ingestion$/, () => Promise.resolve({ status: 200, body: ctx.ingestion.counters }));
  route('GET', /^\/status\/artifacts$/, () => Promise.resolve({ status: 200, body: { artifacts: ctx.downloads.list() } }));

  route('POST', /^\/events\/eventgrid$/, async (request) => {
    const body = await readJson(request, ctx.maxJsonBytes);
    return ctx.eventGrid.handle(request.headers, body);
  });

  route('GET', /^\/artifacts\/([0-9a-f]{64})\/[^/]+$/, () => Promise.resolve(undefined));

  return (request, response) => {
    const url = new URL(request.url ?? '/', 'http://dispatcher');
    const send = (status: number, body: unknown): void => {
      if (response.headersSent) {
        response.destroy();
        return;
      }
      const text = JSON.stringify(body);
      response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      response.end(text);
    };
    const run = async (): Promise<void> => {
      // Downloads stream a file rather than a JSON answer.
      const artifact = /^\/artifacts\/([0-9a-f]{64})\/[^/]+$/.exec(url.pathname);
      if (artifact && request.method === 'GET' && ctx.artifacts) {
        const sha256 = artifact[1]!;
        const download = ctx.artifacts.open(sha256, url.searchParams.get('se'), url.searchParams.get('sig'));
        ctx.downloads.started(sha256);
        response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': download.sizeInBytes });
        const body = download.open();
        body.on('data', (chunk: Buffer) => ctx.downloads.sent(sha256, chunk.length));
        await pipeline(body, response);
        ctx.downloads.completed(sha256);
        return;
      }
      const pathname = url.pathname.split('/').map((part) => {
        try {
          return decodeURIComponent(part);
        } catch {
          throw new DispatcherError('REQUEST_INVALID', 'bad percent-encoding in the path');
        }
      });
      const decodedPath = pathname.join('/');
      const matching = routes.filter((r) => r.pattern.test(url.pathname) || r.pattern.test(decodedPath));
      const found = matching.find((r) => r.method === request.method);
      if (!found) throw new DispatcherError(matching.length ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND');
      // Ids may carry '/' and '@' (update ids): match the raw path first, then decode each captured segment.
      const rawMatch = found.pattern.exec(url.pathname);
      const params = rawMatch ? rawMatch.slice(1).map((p) => decodeURIComponent(p)) : found.pattern.exec(decodedPath)!.slice(1);
      const answer = await found.handler(request, params, url);
      if (answer) send(answer.status, answer.body);
    };
    run().catch((error: unknown) => {
      if (isDispatcherError(error)) {
        send(error.status, error.toJSON());
        return;
      }
      ctx.log(`${request.method ?? ''} ${url.pathname}: ${(error as Error).stack ?? String(error)}`);
      send(500, { error: { code: 'INTERNAL', message: 'unexpected error; see the dispatcher log' } });
    });
  };
}
