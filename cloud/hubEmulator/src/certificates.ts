import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

// The emulator is a TLS endpoint like IoT Hub: a CA that clients trust (the edge trust bundle, or
// NODE_EXTRA_CA_CERTS for the service SDK) issues a short-lived server certificate for the hub's address.
// openssl is used because Node has no API to issue X.509 certificates.

export interface CertificateAuthority {
  readonly certFile: string;
  readonly keyFile: string;
  readonly certPem: string;
}

export interface ServerCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    throw new Error(`openssl ${args[0] ?? ''} failed: ${stderr.trim() || String(error)}`, { cause: error });
  }
}

/** Loads the CA kept in `dir`, creating it on first use so a restarted emulator keeps the trust its clients have. */
export async function loadOrCreateCertificateAuthority(dir: string): Promise<CertificateAuthority> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const certFile = path.join(dir, 'ca.pem');
  const keyFile = path.join(dir, 'ca.key');
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    // Two emulators sharing one CA dir may race here; each writes to its own temp names, then renames.
    const tmp = `${process.pid}-${Date.now()}`;
    await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `ca.key.${tmp}`], dir);
    await openssl(
      ['req', '-x509', '-new', '-key', `ca.key.${tmp}`, '-sha256', '-days', '3650', '-subj', '/CN=edge-ota hub emulator CA (test only)',
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', `ca.pem.${tmp}`],
      dir,
    );
    if (!existsSync(certFile) || !existsSync(keyFile)) {
      await rename(path.join(dir, `ca.key.${tmp}`), keyFile);
      await rename(path.join(dir, `ca.pem.${tmp}`), certFile);
    } else {
      await rm(path.join(dir, `ca.key.${tmp}`), { force: true });
      await rm(path.join(dir, `ca.pem.${tmp}`), { force: true });
    }
  }
  return { certFile, keyFile, certPem: await readFile(certFile, 'utf8') };
}

/** Issues a server certificate for the given host names / IP addresses, signed by the CA. */
export async function issueServerCertificate(
  ca: CertificateAuthority,
  hosts: ReadonlyArray<string>,
  workDir: string,
): Promise<ServerCertificate> {
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const san = hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');
  const ext = path.join(workDir, 'server.ext');
  await writeFile(
    ext,
    `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`,
  );
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'server.key'], workDir);
  await openssl(['req', '-new', '-key', 'server.key', '-subj', `/CN=${hosts[0] ?? 'localhost'}`, '-out', 'server.csr'], workDir);
  await openssl(
    ['x509', '-req', '-in', 'server.csr', '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial', '-days', '30', '-sha256',
      '-extfile', ext, '-out', 'server.pem'],
    workDir,
  );
  return {
    certPem: await readFile(path.join(workDir, 'server.pem'), 'utf8'),
    keyPem: await readFile(path.join(workDir, 'server.key'), 'utf8'),
  };
}
