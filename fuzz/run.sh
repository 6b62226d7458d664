#!/bin/sh
# Runs every fuzzer of build/fuzz in turn with the libFuzzer flags given (`make fuzz` passes
# -max_total_time=$FUZZ_SECONDS), from its seeds in fuzz/corpus/ and what earlier runs found,
# kept in build/fuzz/corpus/<fuzzer>/. FUZZERS="csr jws" runs only those. A crash stops the run
# and leaves its input in build/fuzz/artifacts/.
set -eu
list=build/fuzz/fuzz/fuzzers.txt
[ -f "$list" ] || { echo "no $list: build the fuzz preset first" >&2; exit 1; }
export ASAN_SYMBOLIZER_PATH=/usr/bin/llvm-symbolizer
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p build/fuzz/artifacts
while read -r binary seeds; do
  name=$(basename "$binary" _fuzzer)
  if [ -n "${FUZZERS:-}" ]; then
    case " $FUZZERS " in *" $name "*) ;; *) continue ;; esac
  fi
  mkdir -p "build/fuzz/corpus/$name"
  echo "== $name"
  "$binary" -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="build/fuzz/artifacts/$name-" \
    "$@" "build/fuzz/corpus/$name" "$seeds" </dev/null
done < "$list"
