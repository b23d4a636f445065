import { execFile } from 'node:child_process';
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { FactoryError } from './factoryTopology.ts';

const run = promisify(execFile);

// Edge CA certificates for a gateway hierarchy (`--edge-ca-dir`). Each gateway's edgeHub (and API proxy) serves a
// certificate issued by that gateway's edge CA; children and leaf devices verify it with the trust bundle, so
// every edge CA must chain to one root that every layer trusts. The root lives in the --edge-ca-dir folder
// (created on first use, or yours: put root-ca.pem and root-ca.key.pem there). A gateway's edge CA is issued once
// and reused on later runs while it still chains to that root, matches its key and is valid for 30 more days.
// openssl issues the certificates (Node cannot); Node's X509Certificate checks them.

export interface EdgeRoot {
  certFile: string;
  keyFile: string;
  certPem: string;
}

export interface EdgeCa {
  /** The edge CA certificate followed by the root: what `[edge_ca] cert` wants. */
  chainPem: string;
  keyPem: string;
}

const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    const missing = (error as { code?: string }).code === 'ENOENT';
    throw new FactoryError('OUTPUT_FAILED', missing ? '--edge-ca-dir needs the openssl command, which is not installed' : `openssl ${args[0] ?? ''} failed: ${stderr.trim() || String(error)}`);
  }
}

/** The hierarchy's root CA in `dir`, created (10 years, P-256) when the folder has none. */
export async function loadOrCreateEdgeRoot(dir: string): Promise<EdgeRoot & { created: boolean }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const certFile = path.join(dir, 'root-ca.pem');
  const keyFile = path.join(dir, 'root-ca.key.pem');
  let created = false;
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    if (existsSync(certFile) !== existsSync(keyFile)) throw new FactoryError('USAGE', `--edge-ca-dir ${dir} has only one of root-ca.pem and root-ca.key.pem`);
    const tmp = `${process.pid}-${randomBytes(4).toString('hex')}`;
    await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `root-ca.key.pem.${tmp}`], dir);
    await openssl(['req', '-x509', '-new', '-key', `root-ca.key.pem.${tmp}`, '-sha256', '-days', '3650', '-subj', '/CN=edge-ota factory root CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', `root-ca.pem.${tmp}`], dir);
    await rename(path.join(dir, `root-ca.key.pem.${tmp}`), keyFile);
    await rename(path.join(dir, `root-ca.pem.${tmp}`), certFile);
    created = true;
  }
  const certPem = await readFile(certFile, 'utf8');
  const root = new X509Certificate(certPem);
  if (!root.ca) throw new FactoryError('USAGE', `${certFile} is not a CA certificate`);
  if (!root.checkPrivateKey(createPrivateKey(await readFile(keyFile)))) throw new FactoryError('USAGE', `${keyFile} is not the key of ${certFile}`);
  return { certFile, keyFile, certPem, created };
}

/** Whether an edge CA already written for `gatewayId` can be kept. */
export function edgeCaStillGood(root: EdgeRoot, gatewayId: string, chainFile: string, keyFile: string, now = Date.now()): boolean {
  if (!existsSync(chainFile) || !existsSync(keyFile)) return false;
  try {
    const chainPem = readFileSync(chainFile, 'utf8');
    const first = chainPem.slice(0, chainPem.indexOf('-----END CERTIFICATE-----') + '-----END CERTIFICATE-----'.length);
    const cert = new X509Certificate(first);
    const rootCert = new X509Certificate(root.certPem);
    return cert.ca &&
      cert.subject === `CN=${edgeCaCommonName(gatewayId)}` &&
      cert.verify(rootCert.publicKey) &&
      cert.checkPrivateKey(createPrivateKey(readFileSync(keyFile))) &&
      new Date(cert.validTo).getTime() - now > RENEW_BEFORE_MS &&
      chainPem.includes(root.certPem.trim());
  } catch {
    return false;
  }
}

export function edgeCaCommonName(gatewayId: string): string {
  return `${gatewayId} edge CA`;
}

/** Issues an edge CA for one gateway (P-256, CA with path length 0: it issues edgeHub's server certificates). */
export async function issueEdgeCa(root: EdgeRoot, gatewayId: string, days: number): Promise<EdgeCa> {
  const work = await mkdtemp(path.join(tmpdir(), 'edge-ota-factory-ca-'));
  try {
    await writeFile(path.join(work, 'ca.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n');
    await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'edge-ca.key.pem'], work);
    // The id may hold characters openssl's -subj treats specially; a config file takes it verbatim.
    await writeFile(path.join(work, 'req.cnf'), `[req]\nprompt=no\ndistinguished_name=dn\n[dn]\nCN=${edgeCaCommonName(gatewayId).replaceAll('\\', '\\\\')}\n`);
    await openssl(['req', '-new', '-key', 'edge-ca.key.pem', '-config', 'req.cnf', '-out', 'edge-ca.csr'], work);
    await openssl(['x509', '-req', '-in', 'edge-ca.csr', '-CA', root.certFile, '-CAkey', root.keyFile, '-set_serial', `0x${randomBytes(16).toString('hex')}`,
      '-days', String(days), '-sha256', '-extfile', 'ca.ext', '-out', 'edge-ca.pem'], work);
    const cert = await readFile(path.join(work, 'edge-ca.pem'), 'utf8');
    return { chainPem: `${cert.trim()}\n${root.certPem.trim()}\n`, keyPem: await readFile(path.join(work, 'edge-ca.key.pem'), 'utf8') };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
