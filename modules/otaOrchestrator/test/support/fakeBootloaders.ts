import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

// Fake grub-editenv and fw_printenv/fw_setenv that log their argv and keep the environment as key=value lines,
// plus a `boot()` per bootloader that does what its boot script does with that environment at power-on and
// writes the kernel command line. Together they let the GRUB and U-Boot adapters run through real reboots.

export interface FakeBootloader {
  binDir: string;
  /** The file the adapter reads the kernel command line from. */
  cmdlineFile: string;
  env(): Record<string, string>;
  /** Every call as `program arg arg ...` (fw_setenv -s also logs the script's lines, prefixed by "  "). */
  calls(): string[];
  /** Power-on: the bootloader picks a slot, updates its environment, and boots the kernel. */
  boot(): 'A' | 'B';
}

const logCall = 'echo "$(basename "$0") $*" >> "$(dirname "$0")/calls.log"';

// grub-editenv FILE list | set k=v... | unset k...
const grubEditenv = `#!/bin/sh
${logCall}
file="$1"; cmd="$2"; shift 2
touch "$file"
case "$cmd" in
  list) cat "$file" ;;
  set) for kv in "$@"; do k=\${kv%%=*}; grep -v "^$k=" "$file" > "$file.tmp"; echo "$kv" >> "$file.tmp"; mv "$file.tmp" "$file"; done ;;
  unset) for k in "$@"; do grep -v "^$k=" "$file" > "$file.tmp"; mv "$file.tmp" "$file"; done ;;
  create) : > "$file" ;;
  *) echo "grub-editenv: unknown command $cmd" >&2; exit 1 ;;
esac
`;

// fw_printenv [-c cfg]; fw_setenv [-c cfg] -s script | fw_setenv [-c cfg] name [value]
const fwPrintenv = `#!/bin/sh
${logCall}
cat "$(dirname "$0")/uboot.env"
`;
const fwSetenv = `#!/bin/sh
${logCall}
env="$(dirname "$0")/uboot.env"
if [ "$1" = -c ]; then shift 2; fi
put() { grep -v "^$1=" "$env" > "$env.tmp"; if [ -n "$2" ]; then echo "$1=$2" >> "$env.tmp"; fi; mv "$env.tmp" "$env"; }
if [ "$1" = -s ]; then
  while read -r k v; do echo "  $k $v" >> "$(dirname "$0")/calls.log"; put "$k" "$v"; done < "$2"
else
  put "$1" "$2"
fi
`;

function install(binDir: string, files: Record<string, string>): void {
  mkdirSync(binDir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    writeFileSync(path.join(binDir, name), text);
    chmodSync(path.join(binDir, name), 0o755);
  }
}

function readEnv(file: string): Record<string, string> {
  if (!existsSync(file)) return {};
  return Object.fromEntries(readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('=') && !l.startsWith('#')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

function writeEnv(file: string, env: Record<string, string>): void {
  writeFileSync(file, Object.entries(env).map(([k, v]) => `${k}=${v}\n`).join(''));
}

function calls(binDir: string): string[] {
  const log = path.join(binDir, 'calls.log');
  return existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean) : [];
}

export function createFakeGrub(root: string, entries: Record<'A' | 'B', string> = { A: 'edge-ota-A', B: 'edge-ota-B' }): FakeBootloader & { envFile: string } {
  const binDir = path.join(root, 'fake-grub-bin');
  install(binDir, { 'grub-editenv': grubEditenv });
  const envFile = path.join(root, 'grubenv');
  const cmdlineFile = path.join(root, 'cmdline');
  writeEnv(envFile, { saved_entry: entries.A });
  return {
    binDir,
    envFile,
    cmdlineFile,
    env: () => readEnv(envFile),
    calls: () => calls(binDir),
    boot() {
      // grub.cfg's 00_header with GRUB_DEFAULT=saved: next_entry wins once and is cleared before booting.
      const env = readEnv(envFile);
      const entry = env.next_entry || env.saved_entry;
      delete env.next_entry;
      writeEnv(envFile, env);
      const slot = entry === entries.B ? 'B' : 'A';
      writeFileSync(cmdlineFile, `BOOT_IMAGE=/vmlinuz-${slot} root=PARTLABEL=root${slot} ro quiet edgeota.slot=${slot}\n`);
      return slot;
    },
  };
}

export function createFakeUboot(root: string): FakeBootloader {
  const binDir = path.join(root, 'fake-uboot-bin');
  install(binDir, { fw_printenv: fwPrintenv, fw_setenv: fwSetenv });
  const envFile = path.join(binDir, 'uboot.env');
  const cmdlineFile = path.join(root, 'cmdline');
  writeEnv(envFile, { boot_part: 'A', bootlimit: '1', bootcount: '0', upgrade_available: '0' });
  return {
    binDir,
    cmdlineFile,
    env: () => readEnv(envFile),
    calls: () => calls(binDir),
    boot() {
      // U-Boot's boot count limit: with upgrade_available set, each boot counts, and past bootlimit altbootcmd
      // switches boot_part back and clears upgrade_available before booting.
      const env = readEnv(envFile);
      if (env.upgrade_available === '1') {
        env.bootcount = String(Number(env.bootcount ?? '0') + 1);
        if (Number(env.bootcount) > Number(env.bootlimit ?? '1')) {
          env.boot_part = env.boot_part === 'B' ? 'A' : 'B';
          env.upgrade_available = '0';
          env.bootcount = '0';
        }
      }
      writeEnv(envFile, env);
      const slot = env.boot_part === 'B' ? 'B' : 'A';
      writeFileSync(cmdlineFile, `console=ttyS0 root=/dev/mmcblk0p${slot === 'A' ? 2 : 3} edgeota.slot=${slot}\n`);
      return slot;
    },
  };
}
