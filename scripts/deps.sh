#!/usr/bin/env bash
# Installs every build, test and benchmark dependency from Debian packages and npm.
# Idempotent: packages already present are not touched, so a second run is quick.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git curl ca-certificates openssl python3
  libboost1.81-dev libsimdjson-dev libssl-dev libsqlite3-dev sqlite3 libpq-dev libhiredis-dev
  libyaml-cpp-dev libmimalloc-dev libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev
  libbenchmark-dev nodejs npm clang libclang-rt-14-dev valgrind
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(nginx-light wrk)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm may come from outside Debian (a machine image); accept any working install.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"

if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "deps: all packages present" >&2
fi
