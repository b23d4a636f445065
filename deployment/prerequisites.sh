#!/bin/sh
# The Debian packages edge-ota needs beyond Node.js and npm, installed only when missing:
#   demo  the simulated MCU of `npm run demo`: the C firmware sample is built for this machine (make, gcc) and talks
#         over a pseudo-terminal pair (socat)
#   test  everything `npm test` uses: the above, QEMU and the Arm toolchain (the firmware under qemu-system-arm),
#         nginx and curl (reference tools for the cache and download tests), openssl
# Needs root, or sudo, only when something is missing. Runs `apt-get update` before installing.
set -eu

mode="${1:-demo}"
case "$mode" in
  demo) packages="ca-certificates socat make gcc libc6-dev" ;;
  test) packages="ca-certificates curl openssl socat nginx-light make gcc libc6-dev qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi" ;;
  *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac

missing=""
for package in $packages; do
  if ! dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
    missing="$missing $package"
  fi
done
if [ -z "$missing" ]; then
  echo "prerequisites ($mode): all installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "prerequisites: missing$missing; install them as root: apt-get install$missing" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "prerequisites: missing$missing and no apt-get here; install the equivalent packages by hand" >&2
  exit 1
fi

echo "prerequisites: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$as_root apt-get update
# shellcheck disable=SC2086 # one word per package
$as_root apt-get install -y --no-install-recommends $missing
