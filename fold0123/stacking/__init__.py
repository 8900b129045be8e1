"""Stacking: the last room of the recipe. It only READS run directories (DESIGN.md §3) and the dataroot.

One module per job, each a few plain functions returning plain data:
  runs        run directories -> per-epoch 8-view outputs and metrics (cached, one clear error when missing)
  features    outputs -> per-object feature tables (views aggregated by mean/max/min/var), out-of-fold and in-fold;
              the extra columns a stack or a baseline may add (pixel statistics, the bag of tags)
  cv          the one cross-validation loop of every LightGBM (`cross_validate` -> CVResult), inner splits
  pipeline    the LightGBM stack `stack.py` runs (run_stack): features -> stack -> post-processing -> reports
  postprocess blend with the target task, onehot override, integer snapping, clipping; tuned on OOF only
  pseudo      pseudo-label rows and the split CSVs of the next round

Beside it: fold0123.ensemble (probability ensembles, pseudo-label rounds), fold0123.baselines, fold0123.reports
(markdown and HTML), fold0123.ablation. No torch in any of them: they run on a laptop from the .npz files alone.
"""
