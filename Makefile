# The two commands: `make demo` (the whole recipe on the bundled emoji dataset) and `make test`;
# `make test-fast` is the suite without the integration runs and the fault injection (pytest.ini), for a quick
# check while editing; `make faults` is the fault injection at its full counts (tests/test_faults.py).
PY := .venv/bin/python
RECIPE ?= parameters/demo/recipe.yml
ABLATION ?= parameters/ablation/cpu.yml
ABLATION_RECIPE ?= parameters/ablation/recipe/atmacup_cpu.yml

TUNE ?= parameters/tune/demo_cpu.yml

.PHONY: tune env demo demo-classify demo-retrieval ablation ablation-recipe ablation-classify test test-ablation test-fast lint-imports faults bench gpu-check clean-runs
env:
	@bash scripts/ensure_env.sh

demo: env
	PYTHONUNBUFFERED=1 $(PY) recipe.py --conf $(RECIPE) $(if $(SET),$(foreach s,$(SET),--set $(s)))

# The second benchmark: emoji subcategory classification (88 classes, ImageFolder layout) -> 5 folds -> a ResNet18
# through fold0123 (the fold runs only: test is their mean) -> score-weighted ensemble with a pixel-features
# LightGBM -> submission scored by accuracy, with its baselines.
demo-classify: env
	PYTHONUNBUFFERED=1 $(PY) recipe.py --conf parameters/classify/recipe.yml $(if $(SET),$(foreach s,$(SET),--set $(s)))

# Text-to-image retrieval (issue 11) on the bundled emoji retrieval set: build -> pack -> train (transferred from
# the demo's jigsaw run, and from scratch) -> predict -> ensemble -> test-time learning -> score; prints the table.
demo-retrieval: env
	PYTHONUNBUFFERED=1 $(PY) -m fold0123.retrieval.demo

# The ablation table (RESULTS.md, results.json, report.html in results/cpu): the demo recipe as the table was made
# (3 folds and `all` runs: parameters/demo/three_folds_all/recipe.yml), its variants and the baselines.
ablation: env
	PYTHONUNBUFFERED=1 $(PY) ablation.py --conf $(ABLATION) $(if $(SET),$(foreach s,$(SET),--set $(s)))

# The training-recipe rows (issue 19; docs/ablation.md): each variant of one task preset (stem, augmentations,
# mixup/cutmix, EMA, soup, more epochs with a cheaper net) on the same folds over 2 seeds, judged against the base,
# beside the baselines. VARIANTS="small_stem ema" trains only those (with the base). Results in results/cpu_recipe
# and results/classify_recipe.
ablation-recipe: env
	PYTHONUNBUFFERED=1 $(PY) ablation_recipe.py --conf $(ABLATION_RECIPE) $(if $(SET),$(foreach s,$(SET),--set $(s))) $(if $(VARIANTS),--variants $(VARIANTS))

ablation-classify: env
	PYTHONUNBUFFERED=1 $(PY) ablation_recipe.py --conf parameters/ablation/recipe/classify_cpu.yml $(if $(SET),$(foreach s,$(SET),--set $(s))) $(if $(VARIANTS),--variants $(VARIANTS))

# The import rules of DESIGN.md section 4 (pyproject.toml's importlinter contracts) first, then the suite, one
# pytest-xdist worker per core (TEST_WORKERS=0: in one process): two workers on 2 cores took 23.7 min where one
# process took 29.5, on the same day (docs/setup.md).
TEST_WORKERS ?= auto
test: env lint-imports
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint-imports: env
	.venv/bin/lint-imports --no-cache

# the ablation's end-to-end test over every row and two seeds (`make test` runs one seed and the baseline claim's
# rows): the variants' runs, the seeds' layout and halves
test-ablation: env
	ABLATION_TEST_SEEDS=0,1 ABLATION_TEST_CLAIMS=all $(PY) -m pytest tests/test_ablation.py $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest -m "not integration and not faults" $(PYTEST_ARGS)

# `make test` runs a slice of these (5 train.py kills, 2 evaluator kills, the full disk as root); this runs 20
# train.py kills, 12 evaluator kills and the fold0123 row kill in tmux, and writes the figures to FAULT_SUMMARY
# (the last lines of the output say them too). FAULT_SEED changes the kill moments, FAULT_JOBS the trials at once.
FAULT_SUMMARY ?= faults-summary.json
faults: env
	rm -f $(FAULT_SUMMARY)
	FAULT_KILLS=$(or $(FAULT_KILLS),20) FAULT_EVAL_KILLS=$(or $(FAULT_EVAL_KILLS),12) FAULT_FULL=1 \
	  FAULT_SUMMARY=$(FAULT_SUMMARY) $(PY) -m pytest -m faults $(PYTEST_ARGS)

# An Optuna study whose trials are fold0123 runs (issue 20; README "Tuning across folds"): the demo's target task
# over lr, epochs, image size and freeze mode on the emoji folds, pruned fold by fold; a killed study resumes with
# the same command. Results: results/tune/{study}/TUNE.md, trials.csv, tune.json, report.html.
tune: env
	PYTHONUNBUFFERED=1 $(PY) tune.py --conf $(TUNE) $(if $(SET),$(foreach s,$(SET),--set $(s)))

# Benchmarks (not part of the tests); results go to BENCHMARKS.md. ImageMagick is the jigsaw baseline; the MUGE
# readers' benchmark first builds the bundled retrieval set (reused when built) and packs it.
bench: env
	@command -v convert-im6.q16 >/dev/null || command -v magick >/dev/null || \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q imagemagick >/dev/null
	$(PY) -m bench.jigsaw_bench
	$(PY) -m bench.train_overhead
	$(PY) -m bench.augment_cost
	$(PY) -m bench.ddp_scaling
	$(PY) -m bench.watch_latency
	$(PY) -m fold0123.preprocessing.muge_emoji --out datasets/emoji_muge
	$(PY) -m fold0123.preprocessing.pack_lmdb --data-dir datasets/emoji_muge --splits train,valid,test
	$(PY) -m bench.muge_readers --data-dir datasets/emoji_muge --rounds 3

# On a machine with GPUs: 1 GPU and DDP over every visible one (torchrun), images/s per GPU, the scaling ratio,
# peak memory, beside published anchors (bench/gpu_check.py); one line and exit 1 without CUDA.
gpu-check: env
	PY=$(PY) bash bench/gpu_check.sh

clean-runs:
	rm -rf runs submissions
