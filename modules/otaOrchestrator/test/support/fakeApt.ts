import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

// Fake `apt-get` and `dpkg-query` for handler tests: shell scripts that log their argv and keep a tiny dpkg
// database (`name version` lines) and repository in files, so nothing on the machine changes. apt-get resolves
// every requested package against the repository before it installs any (like the real one), and can be told
// to break while installing one package, after the ones before it went in.

export interface FakeApt {
  binDir: string;
  /** Packages the fake repository offers, as `name=version`. */
  offer(...specs: string[]): void;
  /** Pretends these are installed, as `name=version`. */
  setInstalled(...specs: string[]): void;
  installed(): Record<string, string>;
  /** dpkg fails while unpacking this package (after earlier ones in the same command went in). */
  failOn(name: string | undefined): void;
  /** Every call as `program arg arg ...`. */
  calls(): string[];
}

const aptGet = `#!/bin/sh
dir=$(dirname "$0")
echo "apt-get $*" >> "$dir/calls.log"
cmd=""
dry=0
skip=0
pkgs=""
for arg in "$@"; do
  if [ $skip = 1 ]; then skip=0; continue; fi
  case "$arg" in
    -o) skip=1 ;;
    -s|--dry-run|--simulate) dry=1 ;;
    -*) ;;
    *) if [ -z "$cmd" ]; then cmd="$arg"; else pkgs="$pkgs $arg"; fi ;;
  esac
done
touch "$dir/installed" "$dir/repo"
case "$cmd" in
  update) echo "Reading package lists... Done"; exit 0 ;;
  install)
    for spec in $pkgs; do
      name=\${spec%%=*}; version=\${spec#*=}
      if ! grep -q "^$name " "$dir/repo"; then echo "E: Unable to locate package $name" >&2; exit 100; fi
      if [ "$version" != "$spec" ] && ! grep -qx "$name $version" "$dir/repo"; then echo "E: Version '$version' for '$name' was not found" >&2; exit 100; fi
    done
    for spec in $pkgs; do
      name=\${spec%%=*}; version=\${spec#*=}
      if [ "$version" = "$spec" ]; then version=$(grep "^$name " "$dir/repo" | tail -n 1 | cut -d' ' -f2); fi
      if [ $dry = 1 ]; then echo "Inst $name ($version)"; continue; fi
      if [ -f "$dir/fail-on" ] && [ "$(cat "$dir/fail-on")" = "$name" ]; then
        echo "dpkg: error processing archive $name ($version): corrupted filesystem tarfile" >&2
        echo "E: Sub-process /usr/bin/dpkg returned an error code (1)" >&2
        exit 100
      fi
      grep -v "^$name " "$dir/installed" > "$dir/installed.tmp"; echo "$name $version" >> "$dir/installed.tmp"; mv "$dir/installed.tmp" "$dir/installed"
      echo "Setting up $name ($version) ..."
    done
    exit 0 ;;
  remove)
    for name in $pkgs; do
      grep -v "^$name " "$dir/installed" > "$dir/installed.tmp"; mv "$dir/installed.tmp" "$dir/installed"
      echo "Removing $name ..."
    done
    exit 0 ;;
  *) echo "E: Invalid operation $cmd" >&2; exit 100 ;;
esac
`;

const dpkgQuery = `#!/bin/sh
dir=$(dirname "$0")
echo "dpkg-query $*" >> "$dir/calls.log"
for name in "$@"; do :; done
touch "$dir/installed"
line=$(grep "^$name " "$dir/installed")
if [ -z "$line" ]; then echo "dpkg-query: no packages found matching $name" >&2; exit 1; fi
printf 'installed\\t%s' "$(echo "$line" | cut -d' ' -f2)"
`;

export function createFakeApt(root: string): FakeApt {
  const binDir = path.join(root, 'fake-apt-bin');
  mkdirSync(binDir, { recursive: true });
  for (const [name, text] of [['apt-get', aptGet], ['dpkg-query', dpkgQuery]] as const) {
    writeFileSync(path.join(binDir, name), text);
    chmodSync(path.join(binDir, name), 0o755);
  }
  const lines = (specs: string[]): string => specs.map((s) => `${s.replace('=', ' ')}\n`).join('');
  const file = (name: string): string => path.join(binDir, name);
  return {
    binDir,
    offer: (...specs) => writeFileSync(file('repo'), (existsSync(file('repo')) ? readFileSync(file('repo'), 'utf8') : '') + lines(specs)),
    setInstalled: (...specs) => writeFileSync(file('installed'), lines(specs)),
    installed: () => Object.fromEntries(
      (existsSync(file('installed')) ? readFileSync(file('installed'), 'utf8') : '').split('\n').filter(Boolean).map((l) => l.split(' ') as [string, string]),
    ),
    failOn: (name) => writeFileSync(file('fail-on'), name ?? ''),
    calls: () => (existsSync(file('calls.log')) ? readFileSync(file('calls.log'), 'utf8').split('\n').filter(Boolean) : []),
  };
}
