import { execFileSync } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { parseImportManifest, signUpdateManifest, updateManifestFromImport, writeBundle } from '@edge-ota/common';
import { makeKeys, makeUpdate } from '../../cloud/dispatcher/test/support/harness.ts';
import { runFactory } from '../../deployment/src/factory.ts';
import { DispatcherClient } from '../../deployment/src/factoryDispatcher.ts';
import type { DispatcherDevice, WantedDevice } from '../../deployment/src/factoryDispatcher.ts';
import { copyFileChecked, writeFileIfChanged } from '../../deployment/src/factoryBundles.ts';
import { edgeCaStillGood, issueEdgeCa, loadOrCreateEdgeRoot } from '../../deployment/src/factoryCertificates.ts';
import type { IdentityDoc, IdentityStore } from '../../deployment/src/factoryIdentities.ts';

// The gateway folders without a hub: atomic writes that leave identical files alone, the checked copy of the
// first-boot bundle, and edge CAs that chain to the hierarchy's root, are kept across runs, and let a child
// verify its parent's edgeHub over TLS.

/** IoT Hub's registry rules that matter here, in memory. */
class MemoryStore implements IdentityStore {
  readonly docs = new Map<string, IdentityDoc>();
  get(deviceId: string): Promise<IdentityDoc | undefined> {
    return Promise.resolve(this.docs.get(deviceId));
  }
  create(body: Record<string, unknown>): Promise<IdentityDoc> {
    const id = String(body.deviceId);
    const edge = (body.capabilities as { iotEdge?: boolean }).iotEdge === true;
    const doc: IdentityDoc = {
      deviceId: id, etag: '1', status: 'enabled', capabilities: { iotEdge: edge },
      deviceScope: edge ? `ms-azure-iot-edge://${id}-1` : (body.deviceScope as string), parentScopes: (body.parentScopes as string[] | undefined) ?? [],
      authentication: { type: 'sas', symmetricKey: { primaryKey: randomBytes(32).toString('base64'), secondaryKey: randomBytes(32).toString('base64') } },
    };
    this.docs.set(id, doc);
    return Promise.resolve(doc);
  }
  update(): Promise<IdentityDoc> {
    throw new Error('not expected');
  }
}

const hasOpenssl = ((): boolean => {
  try {
    execFileSync('openssl', ['version']);
    return true;
  } catch {
    return false;
  }
})();

describe('gateway folder files', () => {
  it('writes atomically, leaves identical content untouched, and repairs a mode without rewriting', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'factory-files-'));
    const file = path.join(dir, 'sub', 'secret.txt');
    expect(await writeFileIfChanged(file, 'one', 0o600)).toBe('created');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const mtime = statSync(file).mtimeMs;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await writeFileIfChanged(file, 'one', 0o600)).toBe('unchanged');
    expect(statSync(file).mtimeMs).toBe(mtime);
    chmodSync(file, 0o644);
    expect(await writeFileIfChanged(file, 'one', 0o600)).toBe('updated');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(await writeFileIfChanged(file, 'two', 0o600)).toBe('updated');
    expect(readFileSync(file, 'utf8')).toBe('two');
    expect(readdirSync(path.join(dir, 'sub'))).toEqual(['secret.txt']); // no temporary file left behind
  });

  it('copies the first-boot bundle only when its sha256 is the expected one', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'factory-copy-'));
    const source = path.join(dir, 'in.otabundle');
    writeFileSync(source, randomBytes(3 * 1024 * 1024 + 5));
    const target = path.join(dir, 'out', 'first-boot.otabundle');
    await expect(copyFileChecked(source, target, '0'.repeat(64))).rejects.toMatchObject({ code: 'BUNDLE_HASH_MISMATCH' });
    const copied = await copyFileChecked(source, target, undefined);
    expect(copied.action).toBe('created');
    expect(readFileSync(target).equals(readFileSync(source))).toBe(true);
    expect((await copyFileChecked(source, target, copied.sha256)).action).toBe('unchanged');
  });
});

/** A dispatcher that knows no device and has every update, and records what it is asked to create. */
class EmptyDispatcher extends DispatcherClient {
  readonly creates: string[] = [];
  override getDevice(): Promise<DispatcherDevice | undefined> {
    return Promise.resolve(undefined);
  }
  override hasUpdate(): Promise<boolean> {
    return Promise.resolve(true);
  }
  override createDevice(wanted: WantedDevice): Promise<{ device: DispatcherDevice; created: boolean }> {
    this.creates.push(wanted.deviceId);
    return Promise.reject(new Error('not expected'));
  }
}

describe('first-boot bundle with --trust', () => {
  it('verifies the signature chain and every file, records what it holds, and refuses a tampered, foreign or expired bundle before any write', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'factory-signed-'));
    const keys = makeKeys(mkdtempSync(path.join(dir, 'keys-')));
    const stranger = makeKeys(mkdtempSync(path.join(dir, 'stranger-')));
    const update = makeUpdate('1.2.0', 1, 4096, 'GatewayApp');
    const payload = path.join(dir, 'payload-0.bin');
    writeFileSync(payload, Buffer.from(update.files['payload-0.bin']!, 'base64'));
    const bundle = async (file: string, expires: Date, signingKey = keys.signingKey): Promise<string> => {
      const { bytes } = updateManifestFromImport(parseImportManifest(Buffer.from(JSON.stringify(update.importManifest))), { expiresDateTime: expires });
      await writeBundle({ manifest: bytes, signature: signUpdateManifest(bytes, signingKey), filePaths: { 'payload-0.bin': payload } }, path.join(dir, file));
      return file;
    };
    const inAMonth = new Date(Date.now() + 30 * 86_400_000);
    const good = await bundle('good.otabundle', inAMonth);
    const run = async (file: string, out: string): Promise<unknown> => {
      const topology = path.join(dir, `${out}.json`);
      writeFileSync(topology, JSON.stringify({ gateways: [{ id: 'top', layer: 0, firstBootBundle: file }] }));
      const store = new MemoryStore();
      try {
        return await runFactory({ topology, hub: { hostName: 'hub.example', serviceConnectionString: 'unused' }, identityStore: store, outDir: path.join(dir, out), trustRoots: [keys.rootPublicFile] });
      } finally {
        if (out !== 'ok') expect(store.docs.size).toBe(0);
      }
    };

    await run(good, 'ok');
    expect(JSON.parse(readFileSync(path.join(dir, 'ok', 'top', 'gateway.json'), 'utf8'))).toMatchObject({
      firstBootBundle: { updateId: 'Contoso/GatewayApp@1.2.0', expiresDateTime: inAMonth.toISOString(), verified: true },
    });

    const tampered = path.join(dir, 'tampered.otabundle');
    const bytes = readFileSync(path.join(dir, good));
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1500) ^ 0xff, bytes.length - 1500); // inside the payload
    writeFileSync(tampered, bytes);
    await expect(run('tampered.otabundle', 'tampered')).rejects.toMatchObject({ code: 'BUNDLE_INVALID' });
    await expect(run(await bundle('foreign.otabundle', inAMonth, stranger.signingKey), 'foreign')).rejects.toMatchObject({ code: 'BUNDLE_INVALID' });
    await expect(run(await bundle('expired.otabundle', new Date(Date.now() - 1000)), 'expired')).rejects.toMatchObject({ code: 'BUNDLE_INVALID', message: expect.stringContaining('expired') as string });
    for (const out of ['tampered', 'foreign', 'expired']) expect(readdirSync(dir)).not.toContain(out);
  });
});

describe('factory and dispatcher disagree', () => {
  it('refuses an identity that exists in IoT Hub but not in the dispatcher, before any write', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'factory-adopt-'));
    const topology = path.join(dir, 'topology.json');
    writeFileSync(topology, JSON.stringify({ gateways: [{ id: 'top', layer: 0, software: 'contoso/app@1.0.0' }] }));
    const store = new MemoryStore();
    await store.create({ deviceId: 'top', capabilities: { iotEdge: true } });
    const dispatcher = new EmptyDispatcher('http://127.0.0.1:9');
    await expect(runFactory({ topology, hub: { hostName: 'hub.example', serviceConnectionString: 'unused' }, identityStore: store, dispatcher, outDir: path.join(dir, 'out') }))
      .rejects.toMatchObject({ code: 'DISPATCHER_CONFLICT', message: expect.stringContaining('top exists in IoT Hub but not in the dispatcher') as string });
    expect(dispatcher.creates).toEqual([]);
    expect(readdirSync(dir)).toEqual(['topology.json']);
  });

  it('refuses an identity that uses X.509, which the factory cannot provision', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'factory-x509-'));
    const topology = path.join(dir, 'topology.json');
    writeFileSync(topology, JSON.stringify({ gateways: [{ id: 'top', layer: 0 }] }));
    const store = new MemoryStore();
    const doc = await store.create({ deviceId: 'top', capabilities: { iotEdge: true } });
    doc.authentication = { type: 'selfSigned' };
    await expect(runFactory({ topology, hub: { hostName: 'hub.example', serviceConnectionString: 'unused' }, identityStore: store, outDir: path.join(dir, 'out') }))
      .rejects.toMatchObject({ code: 'IDENTITY_CONFLICT' });
  });
});

describe.skipIf(!hasOpenssl)('edge CAs for a hierarchy (--edge-ca-dir)', () => {
  it('issues each gateway an edge CA under one root, keeps it on the next run, and a child verifies its parent\'s edgeHub with the trust bundle', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'factory-ca-'));
    const topology = path.join(dir, 'topology.json');
    writeFileSync(topology, JSON.stringify({ hostnameDomain: 'plant.example', gateways: [{ id: 'top', layer: 0 }, { id: 'line', layer: 1, parent: 'top' }] }));
    const store = new MemoryStore();
    const options = { topology, hub: { hostName: 'hub.example', serviceConnectionString: 'unused' }, identityStore: store, outDir: path.join(dir, 'out'), edgeCaDir: path.join(dir, 'pki') };
    const lines: string[] = [];
    await runFactory({ ...options, log: (l) => lines.push(l) });
    expect(lines[0]).toMatch(/^note: created the hierarchy's root CA .*root-ca\.pem/);
    const root = new X509Certificate(readFileSync(path.join(dir, 'pki', 'root-ca.pem')));
    for (const id of ['top', 'line']) {
      const edgeCa = new X509Certificate(readFileSync(path.join(dir, 'out', id, 'edge-ca.pem')));
      expect(edgeCa.subject).toBe(`CN=${id} edge CA`);
      expect(edgeCa.ca).toBe(true);
      expect(edgeCa.verify(root.publicKey)).toBe(true);
      expect(statSync(path.join(dir, 'out', id, 'edge-ca.key.pem')).mode & 0o777).toBe(0o600);
      expect(readFileSync(path.join(dir, 'out', id, 'config.toml'), 'utf8')).toContain('[edge_ca]\ncert = "file:///var/aziot/certs/edge-ota-edge-ca.pem"');
      expect(readFileSync(path.join(dir, 'out', id, 'trust-bundle.pem'), 'utf8')).toBe(readFileSync(path.join(dir, 'pki', 'root-ca.pem'), 'utf8'));
    }

    const again = await runFactory(options);
    expect(again.actions.filter((a) => a.action !== 'unchanged')).toEqual([]);

    // edgeHub on "top" serves a certificate from top's edge CA; "line" trusts only its trust bundle.
    const work = mkdtempSync(path.join(tmpdir(), 'factory-tls-'));
    writeFileSync(path.join(work, 'ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:top.plant.example\n');
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'hub.key'], { cwd: work, stdio: 'pipe' });
    execFileSync('openssl', ['req', '-new', '-key', 'hub.key', '-subj', '/CN=top.plant.example', '-out', 'hub.csr'], { cwd: work, stdio: 'pipe' });
    writeFileSync(path.join(work, 'ca.pem'), readFileSync(path.join(dir, 'out', 'top', 'edge-ca.pem')));
    execFileSync('openssl', ['x509', '-req', '-in', 'hub.csr', '-CA', 'ca.pem', '-CAkey', path.join(dir, 'out', 'top', 'edge-ca.key.pem'), '-set_serial', '7',
      '-days', '2', '-extfile', 'ext', '-out', 'hub.pem'], { cwd: work, stdio: 'pipe' });
    const server = tls.createServer({ key: readFileSync(path.join(work, 'hub.key')), cert: `${readFileSync(path.join(work, 'hub.pem'), 'utf8')}${readFileSync(path.join(dir, 'out', 'top', 'edge-ca.pem'), 'utf8')}` }, (socket) => socket.end('hello'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port, servername: 'top.plant.example', ca: readFileSync(path.join(dir, 'out', 'line', 'trust-bundle.pem')) }, () => {
          let data = '';
          socket.on('data', (chunk: Buffer) => (data += chunk.toString()));
          socket.on('end', () => resolve(data));
        });
        socket.on('error', reject);
      });
      expect(answer).toBe('hello');
    } finally {
      server.close();
    }
  });

  it('renews an edge CA that expires within 30 days or no longer chains to the root', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'factory-renew-'));
    const root = await loadOrCreateEdgeRoot(path.join(dir, 'pki'));
    const other = await loadOrCreateEdgeRoot(path.join(dir, 'other'));
    const edgeCa = await issueEdgeCa(root, 'gw', 40);
    writeFileSync(path.join(dir, 'edge-ca.pem'), edgeCa.chainPem);
    writeFileSync(path.join(dir, 'edge-ca.key.pem'), edgeCa.keyPem);
    const files = [path.join(dir, 'edge-ca.pem'), path.join(dir, 'edge-ca.key.pem')] as const;
    expect(edgeCaStillGood(root, 'gw', ...files)).toBe(true);
    expect(edgeCaStillGood(root, 'gw', ...files, Date.now() + 11 * 24 * 3600 * 1000)).toBe(false);
    expect(edgeCaStillGood(root, 'other-gw', ...files)).toBe(false);
    expect(edgeCaStillGood(other, 'gw', ...files)).toBe(false);
    writeFileSync(path.join(dir, 'edge-ca.key.pem'), (await issueEdgeCa(root, 'gw', 40)).keyPem);
    expect(edgeCaStillGood(root, 'gw', ...files)).toBe(false);
  });
});
