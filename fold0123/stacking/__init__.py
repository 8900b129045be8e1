"""Stacking: the last room of the recipe. It only READS run directories (DESIGN.md §3) and the dataroot.

One module per job, each a few plain functions returning plain data:
  runs        run directories -> per-epoch 8-view outputs and metrics (cached, one clear error when missing)
  features    outputs -> per-object feature tables (views aggregated by mean/max/min/var), out-of-fold and in-fold
  lgbm        LightGBM stacking validated on the same group folds the runs used
  postprocess blend with the target task, onehot override, integer snapping, clipping; tuned on OOF only
  ensemble    weighted probability ensembling and label re-distribution
  pseudo      pseudo-label rows and the split CSVs of the next round
  report      submission CSV, markdown/json report, plots
  pipeline    the steps ensemble.ipynb and stack.py run, in order
  pixel_stats ~320 pixel features per photo (statistics, histograms, a thumbnail; cached by photo
              fingerprint): a baseline's features, later stack features (and an ensemble member)
  baselines   constant mean, pixel-statistics and tag LightGBMs on the pipeline's split and answers
              (`python -m fold0123.stacking.baselines`)
  class_baselines  majority class and a multiclass pixel-statistics LightGBM for a class spec, in its metric
              (`python -m fold0123.stacking.class_baselines`)

The run-directory names and the metrics reader are common.rundir's, the answers scorer data.answers's; the
contract-exact fake runs the tests stack live in tests/synthetic_runs.py.

No torch here: stacking runs on a laptop from the .npz files alone.
"""
