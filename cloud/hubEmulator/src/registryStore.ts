import Database from 'better-sqlite3';
import { StatementCache } from './statementCache.ts';
import { checkpointInBackground } from '@edge-ota/common';
import { randomBytes, randomUUID } from 'node:crypto';
import { HubError, badRequest, deviceNotFound, moduleNotFound } from './hubError.ts';
import type { JsonObject, TwinSection } from './twinDocument.ts';
import { assertSectionSize, isJsonObject, mergePatch, validateTwinPatch } from './twinDocument.ts';

// The identity registry and twins, persisted in SQLite so a restarted emulator keeps its identities.
// Documents are stored in IoT Hub's REST shapes so that what the service SDK reads back is what it wrote.

export interface SymmetricKey {
  primaryKey: string;
  secondaryKey: string;
}

export interface IdentityDocument {
  deviceId: string;
  moduleId?: string;
  generationId: string;
  etag: string;
  status: 'enabled' | 'disabled';
  authentication: { type: 'sas'; symmetricKey: SymmetricKey; x509Thumbprint: { primaryThumbprint: null; secondaryThumbprint: null } };
  capabilities?: { iotEdge: boolean };
  deviceScope?: string;
  parentScopes?: string[];
  managedBy?: string;
  statusUpdatedTime: string;
  connectionState: 'Connected' | 'Disconnected';
  connectionStateUpdatedTime: string;
  lastActivityTime: string;
  cloudToDeviceMessageCount: number;
}

export interface TwinState {
  tags: JsonObject;
  desired: JsonObject;
  desiredVersion: number;
  reported: JsonObject;
  reportedVersion: number;
  version: number;
  etag: string;
  lastUpdated: string;
}

export interface IdentityKey {
  deviceId: string;
  moduleId?: string | undefined;
}

export const identityName = ({ deviceId, moduleId }: IdentityKey): string => (moduleId ? `${deviceId}/${moduleId}` : deviceId);

const identityIdPattern = /^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$/;
const edgeScopePrefix = 'ms-azure-iot-edge://';
const neverTime = '0001-01-01T00:00:00Z';

interface IdentityRow {
  doc: string;
  tags: string;
  desired: string;
  desired_version: number;
  reported: string;
  reported_version: number;
  twin_version: number;
  twin_etag: string;
  twin_updated: string;
}

export class RegistryStore {
  readonly #db: Database.Database;
  readonly #checkpoints: { close(): void };
  readonly #statements: StatementCache;

  constructor(file: string) {
    this.#db = new Database(file);
    this.#statements = new StatementCache(this.#db);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('synchronous = NORMAL');
    this.#checkpoints = checkpointInBackground(this.#db, file);
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS identities (
        device_id TEXT NOT NULL,
        module_id TEXT NOT NULL DEFAULT '',
        doc TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '{}',
        desired TEXT NOT NULL DEFAULT '{}',
        desired_version INTEGER NOT NULL DEFAULT 1,
        reported TEXT NOT NULL DEFAULT '{}',
        reported_version INTEGER NOT NULL DEFAULT 1,
        twin_version INTEGER NOT NULL DEFAULT 1,
        twin_etag TEXT NOT NULL,
        twin_updated TEXT NOT NULL,
        PRIMARY KEY (device_id, module_id)
      );
      CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
      -- Parent lookups (every child create, every routed message) find the edge device owning a scope.
      CREATE INDEX IF NOT EXISTS identities_edge_scope ON identities (json_extract(doc, '$.deviceScope'))
        WHERE module_id = '' AND json_extract(doc, '$.capabilities.iotEdge') = 1;
    `);
  }

  #prepare<P extends unknown[] = unknown[], R = unknown>(sql: string): Database.Statement<P, R> {
    return this.#statements.prepare<P, R>(sql);
  }

  close(): void {
    this.#db.close();
    this.#checkpoints.close();
  }

  #nextEtag(): string {
    const row = this.#prepare<[], { value: number }>(
        `INSERT INTO counters (name, value) VALUES ('etag', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value`,
      )
      .get();
    const counter = Buffer.alloc(8);
    counter.writeBigUInt64BE(BigInt(row?.value ?? 1));
    return counter.toString('base64');
  }

  #row(key: IdentityKey): IdentityRow | undefined {
    return this.#prepare<[string, string], IdentityRow>('SELECT * FROM identities WHERE device_id = ? AND module_id = ?')
      .get(key.deviceId, key.moduleId ?? '');
  }

  #requireRow(key: IdentityKey): IdentityRow {
    const row = this.#row(key);
    if (!row) throw key.moduleId ? moduleNotFound(key.deviceId, key.moduleId) : deviceNotFound(key.deviceId);
    return row;
  }

  getIdentity(key: IdentityKey): IdentityDocument | undefined {
    const row = this.#row(key);
    return row ? (JSON.parse(row.doc) as IdentityDocument) : undefined;
  }

  requireIdentity(key: IdentityKey): IdentityDocument {
    return JSON.parse(this.#requireRow(key).doc) as IdentityDocument;
  }

  listDevices(): IdentityDocument[] {
    return this.#prepare<[], { doc: string }>(`SELECT doc FROM identities WHERE module_id = '' ORDER BY device_id`)
      .all()
      .map((r) => JSON.parse(r.doc) as IdentityDocument);
  }

  listModules(deviceId: string): IdentityDocument[] {
    this.#requireRow({ deviceId });
    return this.#prepare<[string], { doc: string }>(`SELECT doc FROM identities WHERE device_id = ? AND module_id != '' ORDER BY module_id`)
      .all(deviceId)
      .map((r) => JSON.parse(r.doc) as IdentityDocument);
  }

  /** The edge device a device is attached under (its deviceScope/parentScopes), if any. */
  parentOf(deviceId: string): string | undefined {
    const doc = this.getIdentity({ deviceId });
    if (!doc) return undefined;
    const scope = doc.capabilities?.iotEdge ? doc.parentScopes?.[0] : doc.deviceScope;
    return scope ? this.#deviceForScope(scope) : undefined;
  }

  #deviceForScope(scope: string): string | undefined {
    const row = this.#prepare<[string], { device_id: string }>(
        `SELECT device_id FROM identities WHERE module_id = '' AND json_extract(doc, '$.capabilities.iotEdge') = 1 AND json_extract(doc, '$.deviceScope') = ?`,
      )
      .get(scope);
    return row?.device_id;
  }

  /** Creates a device or module identity from the REST body, filling what IoT Hub fills (keys, etag, scope). */
  create(key: IdentityKey, body: unknown): IdentityDocument {
    const now = new Date().toISOString();
    if (!identityIdPattern.test(key.deviceId) || (key.moduleId !== undefined && !identityIdPattern.test(key.moduleId))) {
      throw badRequest(`Identity id ${identityName(key)} is not valid: 1-128 characters of letters, digits and -:.+%_#*?!(),=@;$'`);
    }
    if (!isJsonObject(body)) throw badRequest('The request body must be a JSON object');
    if (key.moduleId !== undefined && !this.#row({ deviceId: key.deviceId })) throw deviceNotFound(key.deviceId);
    if (this.#row(key)) {
      throw key.moduleId
        ? new HubError(409, 'ModuleAlreadyExistsOnDevice', `Module ${key.moduleId} already exists on device ${key.deviceId}`)
        : new HubError(409, 'DeviceAlreadyExists', `A device with ID '${key.deviceId}' is already registered`);
    }
    const doc = this.#normalise(key, body, undefined, now);
    const twinEtag = this.#nextEtag();
    this.#prepare(
        `INSERT INTO identities (device_id, module_id, doc, twin_etag, twin_updated) VALUES (?, ?, ?, ?, ?)`,
      )
      .run(key.deviceId, key.moduleId ?? '', JSON.stringify(doc), twinEtag, now);
    return doc;
  }

  /** Replaces an identity (PUT with If-Match), keeping what the caller cannot change. */
  update(key: IdentityKey, body: unknown, ifMatch: string | undefined): IdentityDocument {
    if (!isJsonObject(body)) throw badRequest('The request body must be a JSON object');
    const existing = this.requireIdentity(key);
    checkEtag(existing.etag, ifMatch);
    const doc = this.#normalise(key, body, existing, new Date().toISOString());
    this.#prepare('UPDATE identities SET doc = ? WHERE device_id = ? AND module_id = ?')
      .run(JSON.stringify(doc), key.deviceId, key.moduleId ?? '');
    return doc;
  }

  delete(key: IdentityKey, ifMatch: string | undefined): IdentityDocument {
    const existing = this.requireIdentity(key);
    checkEtag(existing.etag, ifMatch);
    if (key.moduleId) {
      this.#prepare('DELETE FROM identities WHERE device_id = ? AND module_id = ?').run(key.deviceId, key.moduleId);
    } else {
      this.#prepare('DELETE FROM identities WHERE device_id = ?').run(key.deviceId);
    }
    return existing;
  }

  setConnectionState(key: IdentityKey, connected: boolean): void {
    const row = this.#row(key);
    if (!row) return;
    const doc = JSON.parse(row.doc) as IdentityDocument;
    const now = new Date().toISOString();
    doc.connectionState = connected ? 'Connected' : 'Disconnected';
    doc.connectionStateUpdatedTime = now;
    doc.lastActivityTime = now;
    this.#prepare('UPDATE identities SET doc = ? WHERE device_id = ? AND module_id = ?')
      .run(JSON.stringify(doc), key.deviceId, key.moduleId ?? '');
  }

  #normalise(key: IdentityKey, body: JsonObject, existing: IdentityDocument | undefined, now: string): IdentityDocument {
    const auth = isJsonObject(body.authentication) ? body.authentication : {};
    if (auth.type !== undefined && auth.type !== 'sas') {
      throw badRequest(`authentication.type ${JSON.stringify(auth.type)} is not supported by the emulator (only sas)`);
    }
    const requested = isJsonObject(auth.symmetricKey) ? auth.symmetricKey : {};
    const keyOrNew = (value: unknown, fallback: string | undefined): string => {
      if (typeof value === 'string' && value.length > 0) {
        const raw = Buffer.from(value, 'base64');
        if (raw.length < 16 || raw.length > 64 || raw.toString('base64') !== value) {
          throw badRequest('authentication.symmetricKey keys must be base64 of 16 to 64 bytes');
        }
        return value;
      }
      return fallback ?? randomBytes(32).toString('base64');
    };
    const status = body.status ?? existing?.status ?? 'enabled';
    if (status !== 'enabled' && status !== 'disabled') throw badRequest(`status must be enabled or disabled`);
    const doc: IdentityDocument = {
      deviceId: key.deviceId,
      ...(key.moduleId ? { moduleId: key.moduleId } : {}),
      generationId: existing?.generationId ?? randomUUID().replaceAll('-', '').slice(0, 18),
      etag: this.#nextEtag(),
      status,
      authentication: {
        type: 'sas',
        symmetricKey: {
          primaryKey: keyOrNew(requested.primaryKey, existing?.authentication.symmetricKey.primaryKey),
          secondaryKey: keyOrNew(requested.secondaryKey, existing?.authentication.symmetricKey.secondaryKey),
        },
        x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null },
      },
      statusUpdatedTime: status !== existing?.status ? now : (existing?.statusUpdatedTime ?? now),
      connectionState: existing?.connectionState ?? 'Disconnected',
      connectionStateUpdatedTime: existing?.connectionStateUpdatedTime ?? neverTime,
      lastActivityTime: existing?.lastActivityTime ?? neverTime,
      cloudToDeviceMessageCount: 0,
    };
    if (key.moduleId) {
      if (typeof body.managedBy === 'string') doc.managedBy = body.managedBy;
      return doc;
    }
    const capabilities = isJsonObject(body.capabilities) ? body.capabilities : {};
    const iotEdge = capabilities.iotEdge === true;
    doc.capabilities = { iotEdge };
    // An edge device owns a scope; its children name it as deviceScope (leaf) or in parentScopes (nested edge).
    const ownScope = iotEdge ? (existing?.deviceScope?.startsWith(edgeScopePrefix) && existing.capabilities?.iotEdge
      ? existing.deviceScope
      : `${edgeScopePrefix}${key.deviceId}-${randomBytes(8).toString('hex')}`) : undefined;
    const requestedScope = typeof body.deviceScope === 'string' && body.deviceScope.length > 0 ? body.deviceScope : undefined;
    const requestedParents = Array.isArray(body.parentScopes) ? body.parentScopes : [];
    if (requestedParents.some((s) => typeof s !== 'string') || requestedParents.length > 1) {
      throw badRequest('parentScopes must be an array of at most one scope string');
    }
    const parentScope = (requestedParents[0] as string | undefined) ?? (iotEdge ? undefined : requestedScope);
    if (parentScope !== undefined) {
      const parent = this.#deviceForScope(parentScope);
      if (!parent) throw badRequest(`Scope ${parentScope} does not belong to any edge device`);
      if (parent === key.deviceId) throw badRequest('A device cannot be its own parent');
      doc.parentScopes = [parentScope];
    } else {
      doc.parentScopes = [];
    }
    doc.deviceScope = iotEdge ? ownScope : parentScope ?? '';
    return doc;
  }

  getTwin(key: IdentityKey): TwinState {
    const row = this.#requireRow(key);
    return {
      tags: JSON.parse(row.tags) as JsonObject,
      desired: JSON.parse(row.desired) as JsonObject,
      desiredVersion: row.desired_version,
      reported: JSON.parse(row.reported) as JsonObject,
      reportedVersion: row.reported_version,
      version: row.twin_version,
      etag: row.twin_etag,
      lastUpdated: row.twin_updated,
    };
  }

  /**
   * Service-side twin change: PATCH merges tags and desired properties, PUT replaces them. Returns the new twin and
   * the desired patch to push to a connected client (undefined when desired did not change).
   */
  updateTwin(
    key: IdentityKey,
    body: unknown,
    ifMatch: string | undefined,
    mode: 'merge' | 'replace',
  ): { twin: TwinState; desiredPatch: JsonObject | undefined } {
    if (!isJsonObject(body)) throw badRequest('The twin body must be a JSON object');
    const tx = this.#db.transaction(() => {
      const twin = this.getTwin(key);
      checkEtag(twin.etag, ifMatch);
      const properties = isJsonObject(body.properties) ? body.properties : {};
      if (body.properties !== undefined && !isJsonObject(body.properties)) throw badRequest('properties must be an object');
      if (properties.reported !== undefined) throw badRequest('Reported properties cannot be changed by the service');
      let tags = twin.tags;
      let desired = twin.desired;
      let desiredPatch: JsonObject | undefined;
      if (body.tags !== undefined) {
        const patch = validateTwinPatch('tags', body.tags);
        tags = mode === 'merge' ? mergePatch(tags, patch) : stripNulls(patch);
        assertSectionSize('tags', tags);
      }
      if (properties.desired !== undefined) {
        const patch = validateTwinPatch('desired', properties.desired);
        desired = mode === 'merge' ? mergePatch(desired, patch) : stripNulls(patch);
        assertSectionSize('desired', desired);
        desiredPatch = mode === 'merge' ? patch : replacementPatch(twin.desired, desired);
      } else if (mode === 'replace') {
        desiredPatch = replacementPatch(twin.desired, {});
        desired = {};
      }
      const desiredVersion = desiredPatch ? twin.desiredVersion + 1 : twin.desiredVersion;
      const etag = this.#nextEtag();
      const now = new Date().toISOString();
      this.#prepare(
          `UPDATE identities SET tags = ?, desired = ?, desired_version = ?, twin_version = twin_version + 1, twin_etag = ?, twin_updated = ?
           WHERE device_id = ? AND module_id = ?`,
        )
        .run(JSON.stringify(tags), JSON.stringify(desired), desiredVersion, etag, now, key.deviceId, key.moduleId ?? '');
      return { twin: this.getTwin(key), desiredPatch: desiredPatch ? { ...desiredPatch, $version: desiredVersion } : undefined };
    });
    return tx();
  }

  /** Device-side reported-properties patch; returns the new reported version. */
  patchReported(key: IdentityKey, patch: unknown): number {
    const tx = this.#db.transaction(() => {
      const twin = this.getTwin(key);
      const reported = mergePatch(twin.reported, validateTwinPatch('reported', patch));
      assertSectionSize('reported', reported);
      const version = twin.reportedVersion + 1;
      this.#prepare(
          `UPDATE identities SET reported = ?, reported_version = ?, twin_version = twin_version + 1, twin_etag = ?, twin_updated = ?
           WHERE device_id = ? AND module_id = ?`,
        )
        .run(JSON.stringify(reported), version, this.#nextEtag(), new Date().toISOString(), key.deviceId, key.moduleId ?? '');
      return version;
    });
    return tx();
  }

  /** Sets a module twin's desired properties wholesale (configuration content applied to an edge device). */
  replaceDesired(key: IdentityKey, desired: unknown): JsonObject {
    const { desiredPatch } = this.updateTwin(key, { properties: { desired } }, '*', 'replace');
    return desiredPatch ?? {};
  }
}

function checkEtag(current: string, ifMatch: string | undefined): void {
  if (ifMatch === undefined || ifMatch === '*' || ifMatch === '"*"') return;
  const unquoted = ifMatch.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
  if (unquoted !== current) {
    throw new HubError(412, 'PreconditionFailed', `Precondition failed: etag ${ifMatch} does not match ${current}`);
  }
}

function stripNulls(document: JsonObject): JsonObject {
  return mergePatch({}, document);
}

/** The patch that turns `before` into `after` at the top level: removed keys become null. */
function replacementPatch(before: JsonObject, after: JsonObject): JsonObject {
  const patch: JsonObject = { ...after };
  for (const key of Object.keys(before)) if (!(key in after)) patch[key] = null;
  return patch;
}

export type { TwinSection };
