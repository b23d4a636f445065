import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadOrCreateCertificateAuthority } from '@edge-ota/hub-emulator';

// One test-only CA for the whole run: every emulator a test starts issues its server certificate from it, and
// the workers inherit NODE_EXTRA_CA_CERTS so the unmodified service SDK (which has no CA option) trusts them,
// exactly as a developer would configure a shell against the emulator.
export default async function setup(): Promise<() => void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'edge-ota-test-ca-'));
  const ca = await loadOrCreateCertificateAuthority(dir);
  process.env.NODE_EXTRA_CA_CERTS = ca.certFile;
  process.env.EDGE_OTA_TEST_CA_DIR = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
