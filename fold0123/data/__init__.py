"""Reading and shaping a dataroot: the layouts (data.layout by the competition spec of data.competition; MUGE:
data.muge, data.muge_lmdb), folds, tag vectors, the one image cache (data.images), views, jigsaw tiles, metrics
and the Datasets. Modules that need torch import it themselves, so the readers stay importable from torch-free
code (the stacking room); names of files live in common (common.dataroot, common.rundir, common.muge)."""
