# The two commands: `make demo` (the whole recipe on the bundled emoji dataset) and `make test`;
# `make test-fast` is the suite without the integration runs (pytest.ini), for a quick check while editing.
PY := .venv/bin/python
RECIPE ?= parameters/demo/recipe.yml
ABLATION ?= parameters/ablation/cpu.yml

.PHONY: env demo ablation test test-fast bench clean-runs
env:
	@bash scripts/ensure_env.sh

demo: env
	PYTHONUNBUFFERED=1 $(PY) recipe.py --conf $(RECIPE) $(if $(SET),$(foreach s,$(SET),--set $(s)))

# The ablation table (RESULTS.md, results.json, report.html in results/cpu): the demo recipe, its variants and
# the baselines; reuses what `make demo` made.
ablation: env
	PYTHONUNBUFFERED=1 $(PY) ablation.py --conf $(ABLATION) $(if $(SET),$(foreach s,$(SET),--set $(s)))

test: env
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# Benchmarks (not part of the tests); results go to BENCHMARKS.md. ImageMagick is the jigsaw baseline.
bench: env
	@command -v convert-im6.q16 >/dev/null || command -v magick >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q imagemagick >/dev/null
	$(PY) -m bench.jigsaw_bench
	$(PY) -m bench.train_overhead
	$(PY) -m bench.watch_latency

clean-runs:
	rm -rf runs submissions
