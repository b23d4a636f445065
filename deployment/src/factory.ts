import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FileAction } from './factoryBundles.ts';
import { BUNDLE_FILES, sha256OfFile, trustStoreFrom, verifyFirstBootBundle, writeGatewayBundle } from './factoryBundles.ts';
import type { FirstBootInfo } from './factoryBundles.ts';
import type { EdgeRoot } from './factoryCertificates.ts';
import { edgeCaStillGood, issueEdgeCa, loadOrCreateEdgeRoot } from './factoryCertificates.ts';
import type { DispatcherDevice, WantedDevice } from './factoryDispatcher.ts';
import { DispatcherClient, dispatcherConflict, ownAssignment } from './factoryDispatcher.ts';
import type { HubTarget, IdentityDoc, IdentityStore } from './factoryIdentities.ts';
import { ServiceIdentityStore, deviceConnectionString, ensureIdentity } from './factoryIdentities.ts';
import type { GatewaySpec, Topology } from './factoryTopology.ts';
import { FactoryError, readTopology } from './factoryTopology.ts';

// The factory setup as a function: topology -> identities in IoT Hub (directly, or through the dispatcher's API
// when one is given, so that the software assignment and the identity are made together) -> one folder per
// gateway. It reads everything first and refuses conflicts before it writes anything; then it creates or fixes
// what differs, parents before children. Running it again with the same input writes nothing.

export type ActionKind = 'identity' | 'dispatcher' | 'file';
export type Action = 'created' | 'updated' | 'unchanged' | 'removed';

export interface FactoryAction {
  action: Action;
  kind: ActionKind;
  /** A device id or a file path. */
  subject: string;
  detail?: string;
}

export interface FactoryOptions {
  /** A topology file or an already checked topology. */
  topology: string | Topology;
  hub: HubTarget;
  /** Default: the service SDK's Registry on `hub.serviceConnectionString`. */
  identityStore?: IdentityStore;
  /** The dispatcher's base URL (or a client); devices are then created through its API. */
  dispatcher?: string | DispatcherClient;
  /** Default `./factory-out`. */
  outDir?: string;
  /** PEM for `trust_bundle_cert`; default the hub.json `caFile`, if any. The edge root is added to it. */
  trustBundleFile?: string;
  /** Folder of the hierarchy's root CA (created when empty): each gateway gets an edge CA issued by it. */
  edgeCaDir?: string;
  /** Validity of a newly issued edge CA; default 365 days. */
  edgeCaDays?: number;
  /** Root public key files (`*.root.pub.json`): first-boot bundles must verify against them (or ADU's roots). */
  trustRoots?: readonly string[];
  /** Each action as it happens, one line. */
  log?: (line: string) => void;
}

export interface FactoryResult {
  ok: true;
  outDir: string;
  gateways: string[];
  mcus: string[];
  counts: Record<Action, number>;
  actions: FactoryAction[];
}

interface DeviceEntry {
  wanted: WantedDevice;
  gateway?: GatewaySpec;
  existing?: IdentityDoc;
  record?: DispatcherDevice;
}

function displayPath(file: string): string {
  const relative = path.relative(process.env.INIT_CWD ?? process.cwd(), file);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : file;
}

export function formatAction(entry: FactoryAction): string {
  return `${entry.action} ${entry.kind} ${entry.subject}${entry.detail ? `: ${entry.detail}` : ''}`;
}

export async function runFactory(options: FactoryOptions): Promise<FactoryResult> {
  const topology = typeof options.topology === 'string' ? readTopology(options.topology) : options.topology;
  const outDir = path.resolve(options.outDir ?? 'factory-out');
  const store = options.identityStore ?? new ServiceIdentityStore(options.hub.serviceConnectionString);
  const dispatcher = typeof options.dispatcher === 'string' ? new DispatcherClient(options.dispatcher) : options.dispatcher;
  let trustBundlePem: string | undefined;
  const trustFile = options.trustBundleFile ?? options.hub.caFile;
  if (trustFile) {
    try {
      trustBundlePem = readFileSync(trustFile, 'utf8');
    } catch (error) {
      throw new FactoryError('USAGE', `trust bundle ${trustFile}: ${(error as Error).message}`);
    }
    if (!trustBundlePem.includes('-----BEGIN CERTIFICATE-----')) throw new FactoryError('USAGE', `trust bundle ${trustFile} holds no PEM certificate`);
  }
  const edgeCaDays = options.edgeCaDays ?? 365;
  if (!Number.isInteger(edgeCaDays) || edgeCaDays < 31) throw new FactoryError('USAGE', '--edge-ca-days must be an integer of at least 31');

  // A first-boot bundle that is not the one the topology names, or (with trust roots) one that does not verify or
  // has expired, stops the run before anything is written.
  const firstBoot = new Map<string, FirstBootInfo>();
  const trustStore = options.trustRoots?.length ? trustStoreFrom(options.trustRoots) : undefined;
  for (const gateway of topology.gateways) {
    if (!gateway.firstBootBundle) continue;
    if (gateway.firstBootBundleSha256) {
      const actual = await sha256OfFile(gateway.firstBootBundle);
      if (actual !== gateway.firstBootBundleSha256) {
        throw new FactoryError('BUNDLE_HASH_MISMATCH', `${gateway.firstBootBundle} has sha256 ${actual}, the topology expects ${gateway.firstBootBundleSha256} (gateway ${gateway.id}); nothing was changed`);
      }
    }
    if (trustStore) {
      // The copy made later must be the bytes verified now: it is checked against this hash.
      const before = await sha256OfFile(gateway.firstBootBundle);
      const info = await verifyFirstBootBundle(gateway.firstBootBundle, trustStore, gateway.id);
      if ((await sha256OfFile(gateway.firstBootBundle)) !== before) throw new FactoryError('BUNDLE_HASH_MISMATCH', `${gateway.firstBootBundle} changed while it was verified`);
      firstBoot.set(gateway.id, { ...info, sha256: before });
    }
  }
  if (!trustStore && topology.gateways.some((g) => g.firstBootBundle)) {
    options.log?.('note: first-boot bundles are copied without checking their signature: pass --trust <root>.root.pub.json to check them here');
  }
  for (const [id, info] of firstBoot) {
    if (info.expiresDateTime && Date.parse(info.expiresDateTime) - Date.now() < 7 * 24 * 3600 * 1000) {
      options.log?.(`note: the first-boot bundle of ${id} expires at ${info.expiresDateTime}; the gateway refuses it after that`);
    }
  }

  // The hierarchy's root is loaded (or made) before the first hub write, so a missing openssl or a wrong key stops
  // the run while nothing has changed.
  let edgeRoot: EdgeRoot | undefined;
  if (options.edgeCaDir) {
    const root = await loadOrCreateEdgeRoot(path.resolve(options.edgeCaDir));
    if (root.created) options.log?.(`note: created the hierarchy's root CA ${root.certFile} (keep its key safe; it signs every gateway's edge CA)`);
    edgeRoot = root;
    trustBundlePem = trustBundlePem ? `${trustBundlePem.trim()}\n${root.certPem.trim()}\n` : root.certPem;
  }

  const actions: FactoryAction[] = [];
  const record = (entry: FactoryAction): void => {
    actions.push(entry);
    options.log?.(formatAction(entry));
  };

  // Parents before children: gateways by layer, then every gateway's MCUs.
  const entries: DeviceEntry[] = [];
  for (const gateway of topology.gateways) {
    entries.push({ gateway, wanted: { deviceId: gateway.id, isGateway: true, ...(gateway.parent ? { parentId: gateway.parent } : {}), ...(gateway.software ? { updateId: gateway.software } : {}) } });
  }
  for (const gateway of topology.gateways) {
    for (const mcu of gateway.mcus) entries.push({ wanted: { deviceId: mcu.id, isGateway: false, parentId: gateway.id, ...(mcu.firmware ? { updateId: mcu.firmware } : {}) } });
  }

  // 1. Read everything and refuse conflicts before the first write.
  const conflicts: Array<{ code: 'IDENTITY_CONFLICT' | 'DISPATCHER_CONFLICT' | 'UPDATE_NOT_IN_CATALOG'; text: string }> = [];
  const catalog = new Map<string, boolean>();
  for (const entry of entries) {
    entry.existing = await store.get(entry.wanted.deviceId);
    const auth = entry.existing?.authentication?.type;
    if (auth !== undefined && auth.toLowerCase() !== 'sas') conflicts.push({ code: 'IDENTITY_CONFLICT', text: `${entry.wanted.deviceId} authenticates with ${auth}; the factory provisions SAS identities only` });
    if (!dispatcher) continue;
    entry.record = await dispatcher.getDevice(entry.wanted.deviceId);
    if (entry.record) {
      const conflict = dispatcherConflict(entry.record, entry.wanted);
      if (conflict) conflicts.push({ code: 'DISPATCHER_CONFLICT', text: conflict });
    }
    // A new device, or one to be reassigned: its update must be in the catalog.
    if ((!entry.record || ownAssignment(entry.record) !== entry.wanted.updateId) && entry.wanted.updateId) {
      const updateId = entry.wanted.updateId;
      if (!catalog.has(updateId)) catalog.set(updateId, await dispatcher.hasUpdate(updateId));
      if (!catalog.get(updateId)) {
        conflicts.push({ code: 'UPDATE_NOT_IN_CATALOG', text: `${updateId} (for ${entry.wanted.deviceId}) is not in the dispatcher's catalog: import it first (POST /updates or /updates/bundle)` });
      }
    }
    if (!entry.record && entry.existing) {
      conflicts.push({ code: 'DISPATCHER_CONFLICT', text: `${entry.wanted.deviceId} exists in IoT Hub but not in the dispatcher: the dispatcher API ` +
        'cannot adopt an existing identity (if it was created just now, the dispatcher may not have seen its lifecycle event yet: run again; ' +
        'otherwise delete it in IoT Hub, or run without --dispatcher)' });
    }
  }
  if (conflicts.length > 0) {
    throw new FactoryError(conflicts[0]!.code, `nothing was changed:\n  ${conflicts.map((c) => c.text).join('\n  ')}`);
  }

  if (!dispatcher && entries.some((e) => e.wanted.updateId)) {
    options.log?.('note: without --dispatcher the software and firmware of the topology are only written to gateway.json, not assigned');
  }

  // 2. Identities (and dispatcher records), parents first.
  const identities = new Map<string, IdentityDoc>();
  for (const entry of entries) {
    const { wanted } = entry;
    let existing = entry.existing;
    let viaDispatcher = false;
    if (dispatcher) {
      const assignment = wanted.updateId ? `assigned ${wanted.updateId}` : 'no update of its own';
      if (entry.record && ownAssignment(entry.record) !== wanted.updateId) {
        await dispatcher.reassign(wanted.deviceId, wanted.updateId);
        record({ action: 'updated', kind: 'dispatcher', subject: wanted.deviceId, detail: `${assignment} (was ${ownAssignment(entry.record) ?? 'no update of its own'})` });
      } else if (entry.record) {
        record({ action: 'unchanged', kind: 'dispatcher', subject: wanted.deviceId, detail: assignment });
      } else {
        const { device, created } = await dispatcher.createDevice(wanted);
        const conflict = created ? undefined : dispatcherConflict(device, wanted);
        if (conflict) throw new FactoryError('DISPATCHER_CONFLICT', conflict);
        record({ action: created ? 'created' : 'unchanged', kind: 'dispatcher', subject: wanted.deviceId, detail: assignment });
        existing = await store.get(wanted.deviceId);
        if (!existing) throw new FactoryError('DISPATCHER_CONFLICT', `the dispatcher created ${wanted.deviceId} but IoT Hub does not have it (is the dispatcher on another hub?)`);
        viaDispatcher = created;
      }
    }
    const parent = wanted.parentId ? identities.get(wanted.parentId) : undefined;
    const outcome = await ensureIdentity(store, { deviceId: wanted.deviceId, edge: wanted.isGateway, ...(parent ? { parent } : {}) }, existing);
    identities.set(wanted.deviceId, outcome.identity);
    const what = wanted.isGateway ? (wanted.parentId ? `edge gateway under ${wanted.parentId}` : 'edge gateway, top layer') : `leaf device under ${wanted.parentId}`;
    if (viaDispatcher && outcome.action === 'unchanged') record({ action: 'created', kind: 'identity', subject: wanted.deviceId, detail: `${what}, registered by the dispatcher` });
    else record({ action: outcome.action, kind: 'identity', subject: wanted.deviceId, detail: outcome.changes.length ? outcome.changes.join(', ') : what });
  }

  // 3. One folder per gateway.
  const byId = new Map(topology.gateways.map((g) => [g.id, g]));
  for (const gateway of topology.gateways) {
    const identity = identities.get(gateway.id)!;
    const mcuKeys: Record<string, string> = {};
    for (const mcu of gateway.mcus) {
      const key = identities.get(mcu.id)?.authentication?.symmetricKey?.primaryKey;
      if (!key) throw new FactoryError('IDENTITY_CONFLICT', `${mcu.id} has no primary key`);
      mcuKeys[mcu.id] = key;
    }
    let edgeCa: { chainPem: string; keyPem: string } | undefined;
    if (edgeRoot) {
      const chainFile = path.join(outDir, gateway.id, BUNDLE_FILES.edgeCaCert);
      const keyFile = path.join(outDir, gateway.id, BUNDLE_FILES.edgeCaKey);
      edgeCa = edgeCaStillGood(edgeRoot, gateway.id, chainFile, keyFile)
        ? { chainPem: readFileSync(chainFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8') }
        : await issueEdgeCa(edgeRoot, gateway.id, edgeCaDays);
    }
    const verified = firstBoot.get(gateway.id);
    const files = await writeGatewayBundle(outDir, {
      ...(edgeCa ? { edgeCa } : {}),
      ...(verified ? { firstBootInfo: verified } : {}),
      gateway,
      ...(gateway.parent ? { parent: byId.get(gateway.parent)! } : {}),
      iothubHostName: options.hub.hostName,
      deviceKey: identity.authentication?.symmetricKey?.primaryKey ?? '',
      connectionString: deviceConnectionString(options.hub.hostName, identity),
      ...(trustBundlePem ? { trustBundlePem } : {}),
      mcuKeys,
    });
    for (const file of files) record({ action: file.action satisfies FileAction, kind: 'file', subject: displayPath(file.file) });
  }

  const counts: Record<Action, number> = { created: 0, updated: 0, unchanged: 0, removed: 0 };
  for (const entry of actions) counts[entry.action] += 1;
  return {
    ok: true,
    outDir,
    gateways: topology.gateways.map((g) => g.id),
    mcus: topology.gateways.flatMap((g) => g.mcus.map((m) => m.id)),
    counts,
    actions,
  };
}

export function formatSummary(result: FactoryResult): string {
  const { counts } = result;
  return `factory: ${result.gateways.length} gateway(s), ${result.mcus.length} MCU(s) -> ${result.outDir}: ` +
    `${counts.created} created, ${counts.updated} updated, ${counts.unchanged} unchanged, ${counts.removed} removed`;
}
