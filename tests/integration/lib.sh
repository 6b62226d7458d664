# Helpers shared by the integration tests. Source it; it sets -euo pipefail and a temp dir $W
# removed on exit, and stops every server the test started.
set -euo pipefail
W=$(mktemp -d /tmp/fleetid-it-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

failures=0
checks=0
pass() { checks=$((checks + 1)); echo "ok   - $*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL - $*"; }
# expect DESCRIPTION COMMAND...: the command must succeed.
expect() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
finish() {
  echo "$((checks - failures)) passed, $failures failed"
  [[ $failures -eq 0 ]]
}

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# wait_for_log FILE PATTERN [SECONDS]: waits until FILE contains PATTERN.
wait_for_log() {
  local file=$1 pattern=$2 deadline=$((SECONDS + ${3:-60}))
  while ((SECONDS < deadline)); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2
  cat "$file" >&2 || true
  return 1
}

# wait_exit PID SECONDS: waits for PID (a child of this shell) to exit and sets RC to its exit
# status, or to 124 if it is still running after SECONDS.
wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  RC=124
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      RC=0
      wait "$pid" || RC=$?
      return 0
    fi
    sleep 0.1
  done
}
