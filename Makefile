# The stack's entry points. Native (Debian + supervisord) unless stated; compose users see docs/compose.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help up down status logs clean check test load gameday bench generate

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

up: ## install what is missing, build, start the whole stack under supervisord, print the URLs
	@native/up.sh

down: ## stop every process of the stack (data is kept; `make clean` wipes it)
	@native/down.sh

status: ## show each program's state and the memory each holds (PSS), and the whole stack's
	@native/status.sh

logs: ## follow every program's log
	@source native/env.sh && tail -n 20 -F "$$STATE_DIR"/logs/*.log

clean: down ## stop the stack and delete all of its state, and the state `make test` left
	@source native/env.sh && STATE_DIR=$$TEST_STATE_DIR native/down.sh >/dev/null && \
	  rm -rf "$$STATE_DIR" "$$TEST_STATE_DIR" && echo "removed $$STATE_DIR $$TEST_STATE_DIR"

check: ## the fast tier, no stack: fmt, generated files, shellcheck, clippy, unit tests, rule tests, static checks
	@native/check.sh

test: ## make check, then start a stack of its own and run every test, the game day and every live check
	@native/test.sh

load: ## drive the running stack with steady traffic so the dashboards have data (DURATION=5m RATE=100)
	@source native/env.sh && cargo run -q -p opsctl -- load --url http://127.0.0.1:$$APP_PORT \
	  --rate $${RATE:-100} --duration $${DURATION:-5m}

gameday: ## prove every alert on the running stack: fault, page or ticket, resolution (about 35 min; see docs/gameday.md)
	@native/gameday.sh

bench: ## release-build and benchmark the app against a bare axum ceiling; prints the table (see docs/performance.md)
	@app/bench/bench.sh
generate: ## write every generated file from its one source (the topology, the SLOs, the rule files)
	@native/xtask.sh generate
