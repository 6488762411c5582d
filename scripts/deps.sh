#!/usr/bin/env bash
# scripts/deps.sh [--bench] [--golden] [--web] [--fuzz]: install the Debian packages umdq needs
# when they are missing (apt-get, as root or through sudo). Quiet when everything is there.
#   (default)  build and test: compiler, SQLite, ZeroMQ, cJSON, libcurl, libmicrohttpd, OpenBLAS,
#              zlib, libpng, the Fashion-MNIST data set, jq and curl for the shell tests
#   --bench    also python3-torch (the PyTorch baselines under bench/)
#   --golden   also python3-torch and python3-scipy (regenerating tests/golden/)
#   --fuzz     also clang and libclang-rt-14-dev (libFuzzer, for tests/long/fuzz.sh)
#   --web      also chromium, nodejs and npm, then the browser test's npm packages (playwright-core,
#              pinned by tests/web/package-lock.json) into tests/web/node_modules (make test)
set -euo pipefail
pkgs=(build-essential pkg-config libsqlite3-dev sqlite3 libzmq3-dev libcjson-dev libcurl4-openssl-dev
      libmicrohttpd-dev libopenblas-dev zlib1g-dev libpng-dev dataset-fashion-mnist jq curl
      python3 procps psmisc)
for a in "$@"; do
  case $a in
    --bench) pkgs+=(python3-torch python3-numpy) ;;
    --golden) pkgs+=(python3-torch python3-numpy python3-scipy) ;;
    --web) # by command: a node from elsewhere (with its own npm) is as good as Debian's
           command -v chromium >/dev/null || command -v chromium-browser >/dev/null || pkgs+=(chromium)
           command -v node >/dev/null || pkgs+=(nodejs)
           command -v npm >/dev/null || pkgs+=(npm) ;;
    --fuzz) pkgs+=(clang libclang-rt-14-dev) ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "deps.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

web=0
for a in "$@"; do [ "$a" = --web ] && web=1; done
# the browser test's node modules, once the Debian packages are there (npm ci: exactly the lock file)
web_modules() {
  [ $web = 1 ] || return 0
  local dir
  dir=$(cd "$(dirname "$0")/../tests/web" && pwd)
  [ -f "$dir/node_modules/playwright-core/package.json" ] && return 0
  echo "umdq: installing the browser test's npm packages into $dir/node_modules" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || {
    echo "umdq: npm ci in $dir failed" >&2; return 1; }
}

missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then web_modules; exit $?; fi

echo "umdq: installing missing packages: ${missing[*]}" >&2
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "umdq: need root or sudo to install: ${missing[*]}" >&2
  echo "      run as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq || { echo "umdq: apt-get update failed" >&2; exit 1; }
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
  echo "umdq: apt-get install failed for: ${missing[*]}" >&2; exit 1; }
echo "umdq: installed ${missing[*]}" >&2
web_modules
