# Two targets a newcomer needs: `make demo` (install everything, run the main job on a sample
# image) and `make test` (the whole test suite, with ruff and mypy). .ci/run calls `make test`.
# Tests and benchmarks run under scripts/with-services.sh, which starts a private Swift and Ceph.
VENV := .venv/bin

.PHONY: setup demo fixtures lint test bench clean

setup:
	./scripts/setup.sh

demo: setup
	./scripts/demo.sh

fixtures: setup
	$(VENV)/python -m tests.fixtures.build

lint: setup
	$(VENV)/ruff check imgfmt tests benchmarks
	$(VENV)/ruff format --check imgfmt tests benchmarks
	$(VENV)/mypy

test: lint fixtures
	./scripts/with-services.sh $(VENV)/pytest -q

bench: fixtures
	EXTRAS=dev,bench ./scripts/setup.sh
	./scripts/with-services.sh $(VENV)/python -m benchmarks.run

clean:
	rm -rf tests/fixtures/build sample .pytest_cache .mypy_cache .ruff_cache
