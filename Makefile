# homeswarm: syncvol (volume plugin), meshnet (network plugin), edge (daemon).
# `make` builds static binaries; `make plugins` assembles plugin bundles;
# `make install` creates and enables them on $(DOCKER_HOST) (local by default);
# `make test` runs every test; `make push REPO=registry/ns` publishes.

GO        ?= go
# GOARCH=arm64 builds for Raspberry Pi nodes, into build/arm64 (make
# plugins / push GOARCH=arm64); unset, the host's architecture into build.
GOARCH    ?=
BUILD     ?= build$(if $(GOARCH),/$(GOARCH))
ifneq ($(GOARCH),)
export GOARCH
endif
# VERSION=v2 stamps the binaries (main.version, in each plugin's first log
# line); unset, they say "dev".
VERSION   ?=
GOFLAGS_B := -trimpath -ldflags='-s -w$(if $(VERSION), -X main.version=$(VERSION))'
export CGO_ENABLED := 0

# A plugin is built when its command exists; meshnet joins when netdriver
# grows its main package. Each plugin's manifest: syncvol's is the root
# config.json (see README), meshnet's is netdriver/config.json.
PLUGINS   := syncvol $(if $(wildcard netdriver/cmd/meshnet/*.go),meshnet)
DAEMONS   := $(if $(wildcard edge/cmd/edge/*.go),edge)
MANIFEST_syncvol := config.json
MANIFEST_meshnet := netdriver/config.json
CMD_syncvol := ./volumedriver/cmd/syncvol
CMD_meshnet := ./netdriver/cmd/meshnet
CMD_edge    := ./edge/cmd/edge
TAGS_syncvol := noassets

.PHONY: all bins plugins install uninstall deps test test-unit test-arm64 fuzz test-e2e push topo-up topo-down demo demo-down bench clean fmt vet $(PLUGINS) $(DAEMONS)

all: bins

bins: $(addprefix $(BUILD)/bin/,$(PLUGINS) $(DAEMONS))

# Go decides what is stale; the recipe always asks it.
$(BUILD)/bin/%: FORCE
	@mkdir -p $(@D)
	$(GO) build $(GOFLAGS_B) -tags '$(TAGS_$*)' -o $@ $(CMD_$*)

FORCE:

# One bundle per plugin: build/<name>/config.json + build/<name>/rootfs/.
plugins: $(addprefix $(BUILD)/,$(addsuffix /config.json,$(PLUGINS))) $(addprefix $(BUILD)/bin/,$(DAEMONS))

$(BUILD)/%/config.json: $(BUILD)/bin/% FORCE
	@rm -rf $(BUILD)/$*
	@mkdir -p $(BUILD)/$*/rootfs
	cp -a rootfs/. $(BUILD)/$*/rootfs/
	find $(BUILD)/$*/rootfs -name .keep -delete
	cp $(BUILD)/bin/$* $(BUILD)/$*/rootfs/$*
	cp $(MANIFEST_$*) $(BUILD)/$*/config.json

# Settings to apply at install, e.g. make install SETTINGS_syncvol='CLUSTER_KEY=… PEERS=…'.
install: plugins
	@for p in $(PLUGINS); do \
	  scripts/install-plugin.sh "$$p" "$(BUILD)/$$p" $$(eval echo "\$$SETTINGS_$$p") || exit 1; \
	done

uninstall:
	@for p in $(PLUGINS); do scripts/install-plugin.sh --remove "$$p" || exit 1; done

# REPO=registry.example.org/homeswarm → REPO/syncvol:TAG, installable with
# `docker plugin install REPO/syncvol`.
# With GOARCH set the tag is the architecture (REPO/syncvol:arm64), so an
# arm64 push never replaces the amd64 latest.
TAG ?= $(if $(GOARCH),$(GOARCH),latest)
push: plugins
	@test -n "$(REPO)" || { echo "usage: make push REPO=<registry>/<namespace> [TAG=latest]" >&2; exit 2; }
	@for p in $(PLUGINS); do \
	  docker plugin rm -f "$(REPO)/$$p:$(TAG)" >/dev/null 2>&1 || true; \
	  docker plugin create "$(REPO)/$$p:$(TAG)" "$(BUILD)/$$p" && docker plugin push "$(REPO)/$$p:$(TAG)" || exit 1; \
	done

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed: $$out" >&2; exit 1; }

vet:
	$(GO) vet -tags noassets ./...

# Unit tests (fakes, in-process; kernel tests run for real as root), then
# the end-to-end tests on the scripted multi-engine topology.
test: deps fmt vet test-unit test-arm64 fuzz test-e2e

# What demo and test need on a fresh Debian machine (packages, an engine,
# Traefik), installed when missing; quick otherwise.
deps:
	@scripts/deps.sh

# Every fuzz target of a network parser (seeded corpora run in test-unit too),
# each for a number of inputs, not a time: a duration makes Go 1.26's fuzz
# coordinator report "context deadline exceeded" now and then when the time is
# up with a worker mid-input (golang/go#75804, fixed in Go 1.27), which failed
# CI on a busy machine with no failing input. A count is the same work on any
# machine; the generation-stream applier creates files, so it runs fewer.
# FUZZX=10 runs every target ten times as many. The output of a failed target
# is printed, with the input it wrote under testdata/fuzz.
FUZZ_TARGETS ?= ./netdriver/wire:40000 ./netdriver/dataplane:40000 ./edge/builder:40000 ./volumedriver/snapvol:2000 ./internal/proxyproto:40000
FUZZX ?= 1
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; n=$$(( $${t##*:} * $(FUZZX) )); \
	  for f in $$($(GO) test -tags noassets -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f ($$n inputs)"; \
	    out=$$($(GO) test -tags noassets -run '^$$' -fuzz "^$$f\$$" -fuzztime $${n}x $$pkg 2>&1) || { echo "$$out" | tail -40; exit 1; }; \
	  done; \
	done

test-unit:
	CGO_ENABLED=1 $(GO) test -race -tags noassets -timeout 15m ./...

# The unit tests of the arm64 binaries, under qemu-user (see the script for
# the kernel tests qemu cannot run).
test-arm64:
	@GOARCH= scripts/test-arm64.sh

test-e2e: plugins
	scripts/e2e.sh

topo-up: plugins
	scripts/topo.sh up

topo-down:
	scripts/topo.sh down

demo: deps plugins
	scripts/demo.sh

demo-down:
	scripts/topo.sh down

# Every figure side by side with its anchor, into bench/results/ (README.md + chart.svg).
bench: plugins
	bench/run.sh

clean:
	rm -rf $(BUILD)

# Static images by `docker import` into $(DOCKER_HOST): homeswarm/edge, homeswarm/traefik, homeswarm/web.
.PHONY: images
images:
	scripts/images.sh
