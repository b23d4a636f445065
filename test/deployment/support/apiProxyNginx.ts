import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { JsonObject } from '../../../deployment/src/manifest.ts';

// The IoT Edge API proxy module is nginx plus a renderer for its twin-delivered configuration. These helpers do
// the rendering the module does and run nginx with the result, so tests can exercise the real configuration.

export const hasNginx = spawnSync('nginx', ['-v']).status === 0 && spawnSync('openssl', ['version']).status === 0;

/** The proxy module's rendering: `${VAR}` substitution, then `#if_tag ${VAR}` / `#if_tag !${VAR}` blocks. */
export function renderProxyConfig(template: string, env: Record<string, string>, listed: readonly string[]): string {
  let text = template;
  for (const name of listed) if (env[name] !== undefined) text = text.split(`\${${name}}`).join(env[name]);
  const truthy = (value: string): boolean => value !== '' && value !== '0' && value.toLowerCase() !== 'false';
  return text.replace(/#if_tag (!?)(.*)\n([\s\S]*?)#endif_tag (!?)\2\n/g, (_all, not: string, value: string, body: string) =>
    truthy(value.trim()) !== (not === '!') ? body : '',
  );
}

/** The apiProxy module's env and its decoded `proxy_config` twin value from a generated manifest. */
export function proxyOf(manifest: JsonObject): { env: Record<string, string>; config: string } {
  const agent = ((manifest.modulesContent as JsonObject).$edgeAgent as JsonObject)['properties.desired'] as { modules: Record<string, { env: Record<string, { value: string }> }> };
  const env = Object.fromEntries(Object.entries(agent.modules.apiProxy!.env).map(([k, v]) => [k, v.value]));
  const twin = ((manifest.modulesContent as JsonObject).apiProxy as JsonObject)['properties.desired'] as { proxy_config: string };
  return { env, config: Buffer.from(twin.proxy_config, 'base64').toString('utf8') };
}

/** A directory with the files the proxy module puts beside its configuration: server.crt, private_key.pem, trustedCA.crt. */
export function proxyCertificates(hostName: string): { dir: string; certFile: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'api-proxy-'));
  chmodSync(dir, 0o755);
  const openssl = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${hostName}`, '-addext', `subjectAltName=DNS:${hostName}`,
    '-keyout', path.join(dir, 'private_key.pem'), '-out', path.join(dir, 'server.crt')], { encoding: 'utf8' });
  if (openssl.status !== 0) throw new Error(`openssl failed: ${openssl.stderr}`);
  copyFileSync(path.join(dir, 'server.crt'), path.join(dir, 'trustedCA.crt'));
  return { dir, certFile: path.join(dir, 'server.crt') };
}

/** `nginx -t` on a rendered configuration; returns nginx's stderr and exit status. */
export function checkConfig(dir: string, rendered: string): { status: number | null; stderr: string } {
  const file = path.join(dir, 'nginx.conf');
  writeFileSync(file, rendered);
  // The configuration logs to /dev/stdout, which cannot be opened on a socket (what Node's pipes are): give nginx a file.
  const stdout = openSync(path.join(dir, 'stdout.log'), 'w');
  const check = spawnSync('nginx', ['-t', '-e', 'stderr', '-p', `${dir}/`, '-c', file, '-g', `pid ${dir}/nginx.pid;`], { encoding: 'utf8', stdio: ['ignore', stdout, 'pipe'] });
  closeSync(stdout);
  return { status: check.status, stderr: check.stderr };
}

export interface RunningProxy {
  port: number;
  ca: Buffer;
  stop(): Promise<void>;
}

/** Runs nginx with the rendered configuration on a loopback port until stop(). */
export async function startProxy(dir: string, rendered: string, port: number): Promise<RunningProxy> {
  // Docker's embedded DNS (127.0.0.11) does not exist here: names must fail fast instead of after 30 s.
  writeFileSync(path.join(dir, 'nginx.conf'), rendered.replaceAll('resolver 127.0.0.11;', 'resolver 127.0.0.11; resolver_timeout 1s;'));
  const stdout = openSync(path.join(dir, 'stdout.log'), 'w');
  const nginx = spawn('nginx', ['-e', 'stderr', '-p', `${dir}/`, '-c', path.join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid; worker_processes 1;`], { stdio: ['ignore', stdout, 'pipe'] });
  closeSync(stdout);
  let errors = '';
  nginx.stderr?.on('data', (chunk: Buffer) => (errors += chunk.toString()));
  const exited = new Promise<void>((resolve) => nginx.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (nginx.exitCode === null && nginx.signalCode === null) nginx.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    const listening = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(true));
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(false)));
    });
    if (listening) break;
    if (nginx.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`nginx did not start: ${errors}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { port, ca: readFileSync(path.join(dir, 'server.crt')), stop };
}
