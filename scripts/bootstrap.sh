#!/usr/bin/env bash
# Installs every Debian package fleetid needs to build, test and run, idempotently.
# apt is touched only when something is missing, so a second call costs a few dpkg queries.
#
#   scripts/bootstrap.sh            build + test + run dependencies
#   scripts/bootstrap.sh bench      also the benchmark peers (nginx, wrk, cfssl)
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config ccache git
  clang-format clang-tidy-16
  # fuzzing (fuzz/, make test-fuzz): clang 16 with its libFuzzer runtime; llvm for llvm-symbolizer
  clang-16 libclang-rt-16-dev llvm
  # libraries (see docs/dependencies.md for why each is here)
  libssl-dev openssl
  libboost1.81-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libsqlite3-dev libpq-dev postgresql
  libp11-kit-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  # key custody: SoftHSM2 is the embedded PKCS#11 token; OpenSC's pkcs11-tool for operators and tests
  softhsm2 libsofthsm2 opensc
  # external clients the integration tests drive
  curl gnutls-bin python3
  # the OpenAPI check of the operator API's answers (tests/integration/openapi_check.py)
  python3-jsonschema
)

if [[ "${1:-}" == "bench" ]]; then
  packages+=(nginx-light wrk golang-cfssl)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "bootstrap: missing packages: ${missing[*]}" >&2
  echo "bootstrap: run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Update the package lists once per machine (a fresh machine has none that are usable).
stamp=/var/lib/apt/periodic/fleetid-update-stamp
if [[ ! -f $stamp ]] || [[ -n $(find "$stamp" -mmin +1440 2>/dev/null) ]]; then
  apt-get update -qq
  mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "bootstrap: done"
