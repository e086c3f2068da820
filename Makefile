# Entry points: `make demo` and `make test`. Each installs what is missing (Debian packages),
# configures a Release build in build/, builds, and runs.
BUILD_DIR ?= build
JOBS ?= 2
PYTHON := /usr/bin/python3

DEB_PACKAGES := cmake g++ make pkg-config libopenblas-dev libgtest-dev libgmock-dev \
	libbenchmark-dev nlohmann-json3-dev libcli11-dev pybind11-dev python3-dev python3-numpy \
	python3-torch python3-pytest libpng-dev

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps configure build demo test clean

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

clean:
	rm -rf $(BUILD_DIR)
