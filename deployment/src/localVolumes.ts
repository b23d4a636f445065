import path from 'node:path';

// What a module's docker createOptions mean for a module that runs as a local process: every bind and mount
// becomes a directory under the runner's state dir, and environment values that name a container path or a
// module's host name are rewritten to the local equivalent. Ports, devices and cgroup rules have no local
// meaning (a process binds its own ports and opens host devices directly) and are ignored, as are binds of /dev.
//
//   named volume  `edgeOtaOrchestrator:/var/lib/edge-ota/orchestrator` -> <stateDir>/volumes/edgeOtaOrchestrator
//   host path     `/media/edge-ota-usb` (Binds or Mounts)              -> <stateDir>/host/media/edge-ota-usb
//   module URL    `http://contentCache:8080`                           -> `http://127.0.0.1:8080`

export interface ContainerMount {
  /** Path inside the container. */
  target: string;
  /** Local path standing in for the volume or host path. */
  local: string;
  /** A single file (e.g. a bound certificate) rather than a directory. */
  file: boolean;
}

interface CreateOptions {
  HostConfig?: {
    Binds?: string[];
    Mounts?: Array<{ Type?: string; Source?: string; Target?: string }>;
  };
}

/** createOptions, createOptions01, ... joined in order and parsed, as edgeAgent does; objects (templates) as they are. */
export function readCreateOptions(settings: Record<string, unknown>): CreateOptions {
  const keys = Object.keys(settings)
    .filter((key) => /^createOptions\d*$/i.test(key))
    .sort((a, b) => Number(a.replace(/\D/g, '') || 0) - Number(b.replace(/\D/g, '') || 0));
  if (keys.length === 1 && typeof settings[keys[0]!] === 'object') return settings[keys[0]!] as CreateOptions;
  const text = keys.map((key) => String(settings[key])).join('');
  return text ? (JSON.parse(text) as CreateOptions) : {};
}

export function localPathFor(source: string, stateDir: string): string {
  return source.startsWith('/') ? path.join(stateDir, 'host', source) : path.join(stateDir, 'volumes', source);
}

export function mountsOf(createOptions: CreateOptions, stateDir: string): ContainerMount[] {
  const mounts: ContainerMount[] = [];
  const add = (source: string | undefined, target: string | undefined): void => {
    if (!source || !target) return;
    // Host devices (the translator's /dev) are opened directly by a local process: nothing to stand in for.
    if (source === '/dev' || source.startsWith('/dev/')) return;
    mounts.push({ target: path.posix.normalize(target), local: localPathFor(source, stateDir), file: /\.[A-Za-z0-9]+$/.test(path.basename(target)) });
  };
  for (const bind of createOptions.HostConfig?.Binds ?? []) {
    const [source, target] = bind.split(':');
    add(source, target);
  }
  for (const mount of createOptions.HostConfig?.Mounts ?? []) {
    if (mount.Type === undefined || mount.Type === 'bind' || mount.Type === 'volume') add(mount.Source, mount.Target);
  }
  return mounts;
}

/** Rewrites container paths (longest mount first) and module host names inside one environment value. */
export function localiseValue(value: string, mounts: readonly ContainerMount[], moduleIds: readonly string[], hostAddress: string): string {
  const byLength = [...mounts].sort((a, b) => b.target.length - a.target.length);
  // Paths appear alone or in lists (`a:b`, `a,b`); URLs keep their scheme and port.
  let result = value
    .split(/([,;:\s=])/)
    .map((token) => {
      const mount = byLength.find((m) => token === m.target || token.startsWith(`${m.target}/`));
      return mount ? mount.local + token.slice(mount.target.length) : token;
    })
    .join('');
  for (const id of moduleIds) {
    result = result.replace(new RegExp(`(\\w+://)${id}(?=[:/]|$)`, 'g'), `$1${hostAddress}`);
  }
  return result;
}
