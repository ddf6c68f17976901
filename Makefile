# Thin wrapper: install what is missing, configure with CMake, build, run or test.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
BUILD_PKGS := cmake gcc make pkg-config libuv1-dev libssl-dev libhiredis-dev libprotobuf-c-dev \
              protobuf-c-compiler libcmocka-dev libwslay-dev libhttp-parser-dev libargon2-dev
TEST_PKGS  := $(BUILD_PKGS) redis-server python3 python3-pytest python3-paho-mqtt \
              mosquitto mosquitto-clients argon2 openssl clang clang-format \
              golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev \
              python3-yaml yamllint
PY         := /usr/bin/python3

.PHONY: all deps test-deps build asan run test unit integ clean

all: build

deps:
	@./.ci/install-deps $(BUILD_PKGS)

test-deps:
	@./.ci/install-deps $(TEST_PKGS)

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

asan: test-deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=address,undefined >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	./$(BUILD)/shoal -c conf/examples/broker.conf

test: test-deps build asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=8 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
