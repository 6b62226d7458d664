#!/usr/bin/env bash
# clang-tidy over every fleetid translation unit, using the dev build's compile_commands.json.
#
# Why clang-tidy 16 and the two extra flags: fleetid uses std::expected from libstdc++ 12, whose
# <expected> is only enabled when __cpp_concepts >= 202002L. Clang 16 implements what that needs
# (P0848, conditionally trivial special members) but still reports 201907L, and clang 14 (Debian's
# default) cannot parse the header at all. So: clang-tidy-16, -std=c++2b (16 does not know the
# c++23 spelling), and __cpp_concepts raised to what libstdc++ checks for.
#
# -Wthread-safety: clang's analysis of the FLEETID_GUARDED_BY/FLEETID_REQUIRES annotations
# (common/mutex.h); g++ builds ignore them, so lint is where they are checked.
set -euo pipefail
cd "$(dirname "$0")/.."
TIDY=${CLANG_TIDY:-clang-tidy-16}
command -v "$TIDY" >/dev/null || { echo "lint: $TIDY is not installed (scripts/bootstrap.sh)" >&2; exit 1; }
[[ -f build/dev/compile_commands.json ]] || { echo "lint: build the dev preset first" >&2; exit 1; }
# Every translation unit the dev build compiles (benchmarks are built by the release preset only,
# so they are not in this compilation database and are not linted here).
files=$(git ls-files '*.cc' | while read -r f; do
  grep -q "\"file\": \"$PWD/$f\"" build/dev/compile_commands.json && echo "$f"; done)
[[ -n $files ]] || { echo "lint: no translation unit found in build/dev" >&2; exit 1; }
echo "lint: $TIDY over $(wc -w <<<"$files") files"
# Judged by what clang-tidy prints, not by exit codes: xargs reports 123 whenever one file had a
# finding, and grep -v exits 1 when every line was filtered away (a clean run).
# One file per clang-tidy process, largest first: files take from 5 s to over a minute, and with
# batches (or the slow ones last) one core sat idle for minutes at the end.
# Test sources skip bugprone-exception-escape, a quarter of each file's time: it follows every call
# graph (Beast's included) to prove that noexcept functions cannot throw, which guards the server
# against std::terminate; in a test, an exception escaping a destructor fails that test loudly.
tidy_one() {
  local extra=()
  case $1 in *_test.cc | src/testing/*) extra=(--checks=-bugprone-exception-escape) ;; esac
  "$TIDY" -p build/dev --quiet "${extra[@]}" \
    --extra-arg=-Wthread-safety --extra-arg=-std=c++2b --extra-arg=-Wno-builtin-macro-redefined \
    --extra-arg=-Wno-macro-redefined --extra-arg=-U__cpp_concepts --extra-arg=-D__cpp_concepts=202002L "$1"
}
export -f tidy_one
export TIDY
# shellcheck disable=SC2086,SC2011,SC2016
ls -S $files | xargs -P "$(nproc)" -n 1 bash -c 'tidy_one "$1"' tidy_one 2>&1 |
  { grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$|^Suppressed [0-9]+ warnings|^Use -header-filter' || true; } \
  >build/lint.log || true
cat build/lint.log
# A clang-tidy that crashes prints no finding, and xargs then stops starting the rest: a crash is
# a failure, never a clean run.
if grep -q -E 'terminated by signal|Stack dump|Segmentation fault' build/lint.log; then
  echo "lint: clang-tidy crashed; the files after it were not checked (build/lint.log)" >&2
  exit 1
fi
if grep -q -E '(warning|error):' build/lint.log; then
  echo "lint: clang-tidy found problems (build/lint.log)" >&2
  exit 1
fi
echo "lint: clean"
