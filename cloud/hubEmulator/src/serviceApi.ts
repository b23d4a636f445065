import type { IncomingMessage, ServerResponse } from 'node:http';
import { HubError, badRequest, unauthorized } from './hubError.ts';
import type { IotHub } from './iotHub.ts';
import type { IdentityKey } from './registryStore.ts';
import { parseSasToken, verifySasToken } from './sharedAccessSignature.ts';
import { isJsonObject } from './twinDocument.ts';
import { restTwin } from './twinView.ts';

// IoT Hub's service REST surface as `azure-iothub` calls it, plus the edgeHub endpoint that
// `ModuleClient.invokeMethod` uses (same port, authenticated with the calling module's token), plus the
// emulator's fault-injection endpoints under /emulator/faults.

export interface ServicePolicy {
  readonly keyName: string;
  readonly primaryKey: string;
}

const maxRequestBytes = 1024 * 1024;

type Caller = { kind: 'service' } | { kind: 'module'; identity: IdentityKey };
type Handler = (request: { caller: Caller; body: unknown; headers: IncomingMessage['headers']; params: string[] }) => Promise<Reply> | Reply;
interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

interface RouteEntry {
  method: string;
  pattern: RegExp;
  handler: Handler;
  /** Which callers may use the route; module callers only reach the method endpoints, as through edgeHub. */
  modules: boolean;
}

export function createServiceApi(hub: IotHub, policy: ServicePolicy): (req: IncomingMessage, res: ServerResponse) => void {
  const ifMatch = (headers: IncomingMessage['headers']): string | undefined => headers['if-match'];
  const moduleKey = (params: string[]): IdentityKey & { moduleId: string } => ({ deviceId: params[0] ?? '', moduleId: params[1] ?? '' });
  const deviceKey = (params: string[]): IdentityKey => ({ deviceId: params[0] ?? '' });

  const routes: RouteEntry[] = [];
  const route = (method: string, path: string, handler: Handler, modules = false): void => {
    const pattern = new RegExp(`^${path.replaceAll('{id}', '([^/]+)')}$`);
    routes.push({ method, pattern, handler, modules });
  };

  route('GET', '/devices', () => ({ status: 200, body: hub.store.listDevices() }));
  route('PUT', '/devices/{id}', ({ body, headers, params }) => {
    const key = deviceKey(params);
    const match = ifMatch(headers);
    if (isJsonObject(body) && body.deviceId !== undefined && body.deviceId !== key.deviceId) {
      throw badRequest(`deviceId in the body (${JSON.stringify(body.deviceId)}) does not match the URL (${key.deviceId})`);
    }
    // IoT Hub: PUT without If-Match creates, with If-Match replaces.
    const doc = match === undefined ? hub.createIdentity(key, body) : hub.store.update(key, body, match);
    return { status: 200, body: doc };
  });
  route('GET', '/devices/{id}', ({ params }) => ({ status: 200, body: hub.store.requireIdentity(deviceKey(params)) }));
  route('DELETE', '/devices/{id}', ({ params, headers }) => {
    hub.deleteIdentity(deviceKey(params), ifMatch(headers));
    return { status: 204 };
  });
  route('GET', '/devices/{id}/modules', ({ params }) => ({ status: 200, body: hub.store.listModules(params[0] ?? '') }));
  route('PUT', '/devices/{id}/modules/{id}', ({ body, headers, params }) => {
    const key = moduleKey(params);
    const match = ifMatch(headers);
    const doc = match === undefined ? hub.createIdentity(key, body) : hub.store.update(key, body, match);
    return { status: 200, body: doc };
  });
  route('GET', '/devices/{id}/modules/{id}', ({ params }) => ({ status: 200, body: hub.store.requireIdentity(moduleKey(params)) }));
  route('DELETE', '/devices/{id}/modules/{id}', ({ params, headers }) => {
    hub.deleteIdentity(moduleKey(params), ifMatch(headers));
    return { status: 204 };
  });
  route('POST', '/devices/{id}/applyConfigurationContent', ({ params, body }) => {
    hub.applyConfigurationContent(params[0] ?? '', body);
    return { status: 204 };
  });

  const twinRoutes = (suffix: string, key: (params: string[]) => IdentityKey): void => {
    route('GET', `/twins/${suffix}`, ({ params }) => {
      const k = key(params);
      return { status: 200, body: restTwin(hub.store.requireIdentity(k), hub.store.getTwin(k)) };
    });
    route('PATCH', `/twins/${suffix}`, ({ params, body, headers }) => ({
      status: 200,
      body: hub.updateTwin(key(params), body, ifMatch(headers), 'merge'),
    }));
    route('PUT', `/twins/${suffix}`, ({ params, body, headers }) => ({
      status: 200,
      body: hub.updateTwin(key(params), body, ifMatch(headers), 'replace'),
    }));
    route(
      'POST',
      `/twins/${suffix}/methods`,
      async ({ params, body, caller }) => ({
        status: 200,
        body: await hub.invokeMethod(key(params), body, caller.kind === 'module' ? caller.identity : undefined),
      }),
      true,
    );
  };
  twinRoutes('{id}', deviceKey);
  twinRoutes('{id}/modules/{id}', moduleKey);

  route('GET', '/statistics/devices', () => {
    const devices = hub.store.listDevices();
    const enabled = devices.filter((d) => d.status === 'enabled').length;
    return { status: 200, body: { totalDeviceCount: devices.length, enabledDeviceCount: enabled, disabledDeviceCount: devices.length - enabled } };
  });

  // Fault injection (the emulator's only private API): drop a client, cut or restore an edge device's upstream.
  route('POST', '/emulator/faults/drop-connection', ({ body }) => {
    if (!isJsonObject(body) || typeof body.deviceId !== 'string') throw badRequest('deviceId is required');
    const moduleId = typeof body.moduleId === 'string' ? body.moduleId : undefined;
    return { status: 200, body: { dropped: hub.dropConnection({ deviceId: body.deviceId, moduleId }) } };
  });
  route('POST', '/emulator/faults/upstream', ({ body }) => {
    if (!isJsonObject(body) || typeof body.deviceId !== 'string' || typeof body.connected !== 'boolean') {
      throw badRequest('deviceId (string) and connected (boolean) are required');
    }
    hub.setUpstreamConnected(body.deviceId, body.connected);
    return { status: 204 };
  });

  const authenticate = (req: IncomingMessage): Caller => {
    const header = req.headers.authorization;
    if (!header) throw unauthorized('The Authorization header with a SAS token is required');
    const token = parseSasToken(header);
    const edgeModule = req.headers['x-ms-edge-moduleid'];
    if (typeof edgeModule === 'string') {
      const [deviceId, moduleId, extra] = edgeModule.split('/');
      if (!deviceId || !moduleId || extra !== undefined) throw unauthorized('x-ms-edge-moduleId must be <deviceId>/<moduleId>');
      const identity = { deviceId, moduleId };
      const doc = hub.store.getIdentity(identity);
      if (!doc) throw unauthorized(`Unknown module ${edgeModule}`);
      const keys = doc.authentication.symmetricKey;
      verifySasToken(token, [keys.primaryKey, keys.secondaryKey], `${hub.hostName}/devices/${deviceId}/modules/${moduleId}`);
      return { kind: 'module', identity };
    }
    if (token.keyName !== policy.keyName) throw unauthorized(`Unknown shared access policy ${token.keyName ?? '(none)'}`);
    verifySasToken(token, [policy.primaryKey], hub.hostName);
    return { kind: 'service' };
  };

  const send = (res: ServerResponse, reply: Reply): void => {
    const headers: Record<string, string> = { ...reply.headers };
    if (reply.body === undefined) {
      res.writeHead(reply.status, headers).end();
      return;
    }
    const text = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body);
    headers['content-type'] = 'application/json; charset=utf-8';
    headers['content-length'] = String(Buffer.byteLength(text));
    res.writeHead(reply.status, headers).end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'https://hub');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const candidates = routes
      .map((entry) => ({ entry, match: entry.pattern.exec(path) }))
      .filter((c): c is { entry: RouteEntry; match: RegExpExecArray } => c.match !== null);
    if (candidates.length === 0) throw new HubError(404, 'NotFound', `No such resource: ${path}`);
    const chosen = candidates.find((c) => c.entry.method === req.method);
    if (!chosen) throw new HubError(405, 'MethodNotAllowed', `${req.method ?? ''} is not allowed on ${path}`);
    const caller = authenticate(req);
    if (caller.kind === 'module' && !chosen.entry.modules) throw unauthorized('A module token may only invoke methods');
    const body = await readJsonBody(req);
    const params = chosen.match.slice(1).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        throw badRequest(`Malformed percent-encoding in ${path}`);
      }
    });
    send(res, await chosen.entry.handler({ caller, body, headers: req.headers, params }));
  };

  return (req, res) => {
    handle(req, res).catch((error: unknown) => {
      const hubError = error instanceof HubError ? error : new HubError(500, 'ServerError', (error as Error).message);
      if (!(error instanceof HubError)) console.error('hub emulator: unexpected error', error);
      if (!res.headersSent) send(res, { status: hubError.status, body: hubError.toRestBody() });
      else res.destroy();
    });
  };
}

async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxRequestBytes) throw new HubError(413, 'RequestEntityTooLarge', `Request body exceeds ${maxRequestBytes} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    throw badRequest('The request body is not valid JSON');
  }
}
