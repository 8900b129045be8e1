# The two commands: `make demo` (the whole recipe on the bundled emoji dataset) and `make test`.
PY := .venv/bin/python
RECIPE ?= parameters/demo/recipe.yml

.PHONY: env demo test bench clean-runs
env:
	@bash scripts/ensure_env.sh

demo: env
	PYTHONUNBUFFERED=1 $(PY) recipe.py --conf $(RECIPE) $(if $(SET),$(foreach s,$(SET),--set $(s)))

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

bench: env
	$(PY) -m bench.all

clean-runs:
	rm -rf runs submissions
