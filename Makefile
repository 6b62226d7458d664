# fleetid — the two commands a newcomer needs are `make run` and `make test`.
# Both install what is missing (scripts/bootstrap.sh, apt, as root) and build first.

SHELL := /bin/bash
DATA ?= ./var
LISTEN ?= 127.0.0.1:8080
SOURCES = $(shell git ls-files '*.cc' '*.h' 2>/dev/null)

.PHONY: all bootstrap build release run demo test test-dev test-asan test-fuzz fuzz bench fmt fmt-check lint clean

all: build

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap
	cmake --preset dev >/dev/null
	cmake --build --preset dev

release: bootstrap
	cmake --preset release >/dev/null
	cmake --build --preset release

# Starts the authority on its embedded defaults: SQLite and a SoftHSM2 token under $(DATA).
run: release
	./build/release/apps/fleetid-server --data $(DATA) --listen $(LISTEN)

# A device's life, from the factory to retirement, with every command printed (scripts/demo.sh).
demo: release
	scripts/demo.sh

# The whole suite, normally and under AddressSanitizer + UndefinedBehaviorSanitizer (both compiled
# at -Og, so the optimiser's flow warnings are checked too), the fuzzers' corpus replay and smoke run,
# and the lint. The release preset is left to `make run` and `make bench`: a fourth build did not
# fit CI's time (docs/development.md).
test: test-dev test-asan test-fuzz lint

test-dev: bootstrap
	cmake --preset dev >/dev/null
	cmake --build --preset dev
	ctest --preset dev

test-asan: bootstrap
	cmake --preset asan >/dev/null
	cmake --build --preset asan
	ctest --preset asan

# libFuzzer targets (clang-16, build/fuzz): replay fuzz/corpus and fuzz each for ten seconds.
test-fuzz: bootstrap
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz
	ctest --preset fuzz

# Every fuzzer in turn for FUZZ_SECONDS each (FUZZERS="csr jws" for some); what they find is kept
# in build/fuzz/corpus/ for the next run (fuzz/run.sh).
FUZZ_SECONDS ?= 60
fuzz: bootstrap
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz
	fuzz/run.sh -max_total_time=$(FUZZ_SECONDS)

bench:
	@scripts/bootstrap.sh bench
	cmake --preset release >/dev/null
	cmake --build --preset release
	bench/run.sh

fmt:
	clang-format -i $(SOURCES)

fmt-check:
	clang-format --dry-run -Werror $(SOURCES)

lint: build
	scripts/lint.sh

clean:
	rm -rf build bench/out
