# Entry points: `make demo` and `make test`. Each installs what is missing (Debian packages),
# configures a Release build in build/, builds, and runs.
BUILD_DIR ?= build
JOBS ?= 2
PYTHON := /usr/bin/python3

DEB_PACKAGES := cmake g++ make pkg-config libopenblas-dev libopenblas-openmp-dev libdnnl-dev libgtest-dev libgmock-dev \
	libbenchmark-dev nlohmann-json3-dev libcli11-dev pybind11-dev python3-dev python3-numpy \
	python3-torch python3-pytest libpng-dev libstb-dev fonts-dejavu-core \
	libopenmpi-dev openmpi-bin

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Hardening stages (docs/hardening.md), run by `make test` after the Release tests:
#   test-asan  ASan + UBSan over every suite, the CLI and the fuzz corpus (build-asan, Clang);
#   test-fuzz  libFuzzer on the file readers and the CLI's arguments, FUZZ_SECONDS each, from
#              the same build, which also carries the fuzzers' coverage instrumentation;
#   test-tsan  TSan over the threaded suites (build-tsan, Clang, OpenMP through libomp + Archer).
# `make test HARDENING=0` skips them.
HARDENING ?= 1
FUZZ_SECONDS ?= 60
HARDENING_DEB_PACKAGES := clang libclang-rt-14-dev libomp-14-dev
# Any report fails the run. Leak checking is on; suppressions, if ever needed, go in
# tests/sanitizers/ with a comment saying why.
SANITIZER_ENV := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# OpenBLAS and the OpenMP runtime are not instrumented: ignore_noninstrumented_modules keeps
# TSan from reporting their internals, and Archer (LLVM's OMPT tool) tells TSan about OpenMP's
# barriers and tasks, so races in our parallel regions are reported and the runtime's are not.
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1 \
	ARCHER_OPTIONS=verbose=1 OMP_TOOL_LIBRARIES=$$(ls /usr/lib/llvm-*/lib/libarcher.so | tail -n 1)
.PHONY: deps-hardening test-hardening sanitize-build test-asan test-fuzz test-tsan

.PHONY: all deps configure build demo test clean docs

all: build

# Install only the packages dpkg does not already report as installed.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

configure: deps
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE=$(PYTHON)

build: configure
	cmake --build $(BUILD_DIR) -j$(JOBS)

demo: build
	$(BUILD_DIR)/bin/selfattn demo

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS)
	@if [ "$(HARDENING)" != 0 ]; then $(MAKE) --no-print-directory test-hardening; fi

deps-hardening: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(HARDENING_DEB_PACKAGES)"

test-hardening: test-asan test-fuzz test-tsan

# One Clang build for ASan and the fuzzers: it compiles in about half GCC's time, and a second
# build just for the harnesses would cost as much again. Debug keeps assertions on;
# Sanitizers.cmake adds -O1 -g. Tests that cannot run instrumented (a Python extension in an
# uninstrumented interpreter, the install test) carry the label no_sanitize.
# Clang's -fopenmp means LLVM's libomp; OpenBLAS's OpenMP build would bring GCC's libgomp in as
# a second OpenMP runtime, so these builds link the default (pthreads) OpenBLAS.
# oneDNN is built against libgomp too, so these builds run every GEMM on OpenBLAS.
SANITIZER_BLAS := -DLLM_UTILS_OPENBLAS_OPENMP=OFF -DLLM_UTILS_ONEDNN=OFF
sanitize-build: deps-hardening
	cmake -S . -B build-asan -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
	  -DLLM_UTILS_SANITIZE=address,undefined -DLLM_UTILS_FUZZ=ON -DPython3_EXECUTABLE=$(PYTHON) \
	  $(SANITIZER_BLAS)
	cmake --build build-asan -j$(JOBS)

test-asan: sanitize-build
	cd build-asan && $(SANITIZER_ENV) ctest --output-on-failure -j$(JOBS) -LE no_sanitize

test-fuzz: sanitize-build
	fuzz/run_fuzzers.sh build-asan $(FUZZ_SECONDS) $(JOBS)

test-tsan: deps-hardening
	cmake -S . -B build-tsan -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
	  -DLLM_UTILS_SANITIZE=thread -DPython3_EXECUTABLE=$(PYTHON) $(SANITIZER_BLAS)
	cmake --build build-tsan -j$(JOBS) --target llm_utils_tsan_tests
	cd build-tsan && $(TSAN_ENV) ctest --output-on-failure -L tsan -LE no_sanitize

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan

# The API reference (Doxygen, docs/Doxyfile) in $(BUILD_DIR)/docs/html. Optional: not part of
# test, and doxygen is installed only when this target runs.
docs:
	@command -v doxygen >/dev/null || { echo "installing: doxygen"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends doxygen; }
	mkdir -p $(BUILD_DIR)/docs
	( cat docs/Doxyfile; echo "OUTPUT_DIRECTORY = $(BUILD_DIR)/docs" ) | doxygen -
	@echo "API reference: $(BUILD_DIR)/docs/html/index.html"
