# Developer entry points. The real logic lives in scripts/, so CI (.ci/run)
# and a developer run exactly the same thing.
#
#   make demo    the embedded demo (no services needed); DEMO_ARGS=--serve keeps the API up
#   make test    ruff, mypy, a small feed demo, pytest on moto and on DynamoDB Local side by side, then the fault tests; PYTEST_ARGS=... for every run
#   make lint    ruff check and mypy only
#   make bench   every benchmark and the report in bench/out/ (BENCH_ARGS=--quick: a short run)
#   make clean   build and tool caches; make distclean also removes .venv and .cache

PYTHON ?= python3
VENV ?= .venv
DEMO_ARGS ?=
PYTEST_ARGS ?=

export PYTHON VENV

.DEFAULT_GOAL := help
.PHONY: help demo test lint clean distclean

help:
	@sed -n 's/^#   make /make /p' Makefile

demo:
	bash scripts/venv.sh demo
	$(VENV)/bin/feed demo $(DEMO_ARGS)

test:
	bash scripts/test.sh $(PYTEST_ARGS)

lint:
	bash scripts/venv.sh test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

.PHONY: bench
bench:
	bash scripts/venv.sh bench
	$(VENV)/bin/python -m bench.report $(BENCH_ARGS)

clean:
	-bash scripts/dynamodb-local.sh stop
	rm -rf build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis bench/out
	find . \( -path ./$(VENV) -o -path ./.cache -o -path ./.git \) -prune \
		-o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	-for pid in .cache/dynamodb-local-*.pid; do \
		[ -e "$$pid" ] || continue; \
		port=$${pid##*-}; bash scripts/dynamodb-local.sh stop $${port%.pid}; \
	done
	-for marker in .cache/redis-*.started; do \
		[ -e "$$marker" ] || continue; \
		port=$${marker##*-}; bash scripts/ensure-redis.sh stop $${port%.started}; \
	done
	rm -rf $(VENV) .cache
