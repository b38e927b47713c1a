# The same commands everywhere: `make test` is what .ci/run calls.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FOUNDRY_VERSION := 1.7.1

.PHONY: test unit lint serve dev docs env tools system-packages bench clean bench-keys

# Everything the tests need: the Python environment, anvil and cast, then lint and pytest.
test: env tools lint
	$(BIN)/pytest

unit: env
	$(BIN)/pytest tests/unit

lint: env
	$(BIN)/ruff check .
	$(BIN)/mypy

# Run the proxy: make serve ARGS="--upstream http://127.0.0.1:8546 --kms-key alias/treasury"
serve: env
	$(BIN)/signer-proxy serve $(ARGS)

# Everything on one machine: KMS emulator, dev chain, funded keys, the proxy on 127.0.0.1:8545.
# make dev ARGS="--keys 5 --state-dir .dev-state"
dev: env
	$(BIN)/signer-proxy dev $(ARGS)

# Key discovery against the KMS emulator: 1,000 keys, cold and reload (docs/keys.md, "Measured").
bench-keys: env
	mkdir -p bench/results
	$(BIN)/python bench/key_discovery.py > bench/results/key_discovery.json
	cat bench/results/key_discovery.json

# Regenerate docs/config.md from the settings (a test fails when it is stale).
docs: env
	$(BIN)/python -m signer_proxy.config > docs/config.md

env: $(VENV)/.installed

# constraints.txt pins every transitive version: installs are fast and repeatable
# (unpinned, pip's resolver walks back through old aioboto3 releases for minutes).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# anvil, cast and forge (the real node and Foundry clients the tests use; forge compiles with
# solcjs, since native solc builds come from a host this machine cannot reach) and ethers.js;
# Go and sprig from Debian, to render the Helm chart as helm would (no helm binary here);
# and from Debian when missing (needs root): redis-server (the replicas' nonce store),
# SoftHSM2 (the PKCS#11 token), Chromium (the operator page's browser tests), nginx-light
# (the benchmark's reference hop). One apt-get for all of them.
tools: .tools/.installed .tools/.hardhat .tools/.chart-render system-packages

# command to look for : Debian package that provides it
SYSTEM_PACKAGES := redis-server:redis-server softhsm2-util:softhsm2 chromium:chromium \
	/usr/sbin/nginx:nginx-light

system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
		cmd=$${pair%%:*}; pkg=$${pair#*:}; \
		command -v $$cmd >/dev/null 2>&1 || test -x "$$cmd" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing from Debian:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The full benchmark (bench/run.py; ~15 min): wrk for the load, py-spy for --profile.
bench: env tools
	@command -v wrk >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }
	$(BIN)/pip install --quiet -c constraints.txt py-spy
	$(BIN)/python bench/run.py $(ARGS)

.tools/.installed: Makefile
	npm install --silent --no-save --no-audit --no-fund --prefix .tools \
		@foundry-rs/anvil@$(FOUNDRY_VERSION) @foundry-rs/cast@$(FOUNDRY_VERSION) \
		@foundry-rs/forge@$(FOUNDRY_VERSION) solc@0.8.28 ethers@6.17.0 \
		@metamask/eth-sig-util@8.2.0 viem@2.38.0 @hashgraph/sdk@2.81.0
	touch $@

# Hardhat 2 and 3 (tests/integration/test_hardhat.py), each in its own folder. Hardhat 3 needs
# Node 22: node@22 from npm, and npm run under it (under an older Node, npm skips Hardhat 3's
# native simulator, an optional dependency that asks for Node 22).
.tools/.hardhat: Makefile
	npm install --silent --no-save --no-audit --no-fund --prefix .tools/hardhat2 hardhat@2.29.1
	npm install --silent --no-save --no-audit --no-fund --prefix .tools/node22 node@22.23.3
	PATH="$(CURDIR)/.tools/node22/node_modules/node/bin:$$PATH" npm install --silent --no-save \
		--no-audit --no-fund --prefix .tools/hardhat3 hardhat@3.18.0
	touch $@

GO_PACKAGES := golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev \
	golang-gopkg-yaml.v3-dev

.tools/.chart-render: Makefile
	@if ! command -v go >/dev/null || ! test -d /usr/share/gocode/src/github.com/Masterminds/sprig \
		|| ! test -d /usr/share/gocode/src/gopkg.in/yaml.v2; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(GO_PACKAGES) >/dev/null; \
	fi
	mkdir -p .tools && touch $@

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
