"""The config schemas: every key of every kind of config, its type and its default, in one place.

The YAML files in `parameters/` say what a user changes and why (their comments are the documentation); these
classes say what a key may hold and what it is when no file sets it. `parameters/base.yml`, `stack.yml`,
`recipe.yml` and `ttl.yml` document every key of their schema with its default value, and tests/test_config.py
checks that the files and the schemas agree key for key, so neither can drift.

Unknown keys and wrong types are errors (`extra="forbid"`, pydantic's type checks), reported by
`fold0123.common.config` as one line naming the file or `--set`, the key and what was expected. The models are
frozen: the code receives a resolved config and never edits it; a changed copy is `cfg.model_copy(update=...)`.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, NonNegativeFloat, NonNegativeInt,
                      PositiveInt, StrictInt, ValidationInfo, field_validator, model_validator)

from fold0123.common.names import name_problem


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


def _text(value: Any) -> Any:
    """YAML reads `devices: 0` as an int and `devices: 0,1` as a string: both mean device names."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _file_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(f"{value!r} {problem}; it becomes part of file names and must stay inside its folder")
    return value


Text = Annotated[str, BeforeValidator(_text)]
Name = Annotated[str, BeforeValidator(_text), AfterValidator(_file_name)]  # exp and split names
SoupTag = Annotated[str, Field(pattern=r"^soup[1-9][0-9]*$")]  # soup{N}: the uniform soup of the last N epochs
EmaTag = Annotated[str, Field(pattern=r"^ema([1-9][0-9]*)?$")]  # ema: the EMA weights of the last epoch; ema{E}: of E
EpochSpec = Annotated[Literal["last", "best"] | PositiveInt | SoupTag | EmaTag, Field(union_mode="left_to_right")]


# ---------------------------------------------------------------------------------------------------- competition

class CompetitionSpec(Schema):
    """What is predicted and how it is scored: `competition.yml` in the dataroot (data/competition.py reads it;
    a dataroot without one is atmaCup #11, so every default below is that competition's).

    The project's layout always names the id `object_id` and the label `target` (the adapters rename a
    competition's own columns); for `ordinal` and `classification` the label is the class index 0..K-1 and
    `classes` its names (K = len(classes))."""
    name: Text = "atmacup11"
    kind: Literal["ordinal", "classification", "regression"] = "ordinal"
    metric: Literal["rmse", "accuracy", "top5_accuracy", "macro_f1"] = "rmse"
    classes: list[Text] | None = ["0", "1", "2", "3"]  # null with a class kind: 0..max(target) of train.csv
    group_column: Text | None = "art_series_id"        # null: plain stratified folds (no group is kept whole)
    columns: list[Text] = ["sorting_date"]             # further numeric columns every train row must carry


# ---------------------------------------------------------------------------------------------------- runs

class JigsawOptions(Schema):
    grid: Annotated[int, Field(ge=2)] = 3
    permutations_per_image: PositiveInt = 8
    permutation_set: Literal["hamming", "random", "uniform"] = "hamming"
    n_permutations: PositiveInt = 100


class MimOptions(Schema):
    """task: simmim, the masked-image pretext for timm ViTs (models.mim)."""
    mask_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.6  # share of the patches hidden (SimMIM: 0.6, MAE: 0.75)


class ClipOptions(Schema):
    """task: clip, text-to-image retrieval on a MUGE-layout dataroot (models.clip, retrieval/)."""
    embed_dim: PositiveInt = 64
    text_dim: PositiveInt = 128
    text_layers: NonNegativeInt = 1      # transformer encoder layers of the text tower; 0 = an embedding bag
    text_heads: PositiveInt = 4
    max_length: Annotated[int, Field(ge=2)] = 32
    vocab_size: Annotated[int, Field(ge=16)] = 4000
    temperature: Annotated[float, Field(gt=0)] = 0.07
    reader: Literal["cache", "lmdb"] = "cache"


class ArcFaceOptions(Schema):
    """`head: arcface` (models/arcface.py): sub-centres per class, the logit scale and the range the
    frequency-adaptive margins (radians) are spread over, the rarest class getting `margin_max`."""
    subcenters: PositiveInt = 3
    scale: Annotated[float, Field(gt=0)] = 30.0
    margin_min: Annotated[float, Field(ge=0, lt=1.5)] = 0.05
    margin_max: Annotated[float, Field(ge=0, lt=1.5)] = 0.5

    @model_validator(mode="after")
    def _ordered(self):
        if self.margin_min > self.margin_max:
            raise ValueError(f"margin_min {self.margin_min} is above margin_max {self.margin_max}")
        return self


class AugmentationOptions(Schema):
    """Per-image training augmentation beyond the dihedral views (data/augment.py, torchvision.transforms.v2 on the
    uint8 batch, on the training device); every option off by default. Its randomness comes from the generators
    train_epoch seeds with (seed, epoch), so a resumed run draws what an uninterrupted one would."""
    crop_scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] | None = None
    crop_ratio: tuple[Annotated[float, Field(gt=0, le=10)], Annotated[float, Field(gt=0, le=10)]] = (0.75, 4 / 3)
    policy: Literal["none", "trivialaugment", "randaugment"] = "none"
    magnitude: Annotated[int, Field(ge=0, le=30)] = 9
    color_jitter: Annotated[float, Field(ge=0, le=1)] = 0.0
    erasing: Annotated[float, Field(ge=0, le=1)] = 0.0

    @model_validator(mode="after")
    def _ordered(self):
        for key in ("crop_scale", "crop_ratio"):
            low_high = getattr(self, key)
            if low_high is not None and low_high[0] > low_high[1]:
                raise ValueError(f"{key} {list(low_high)}: its low end is above its high end")
        return self


class MixOptions(Schema):
    """MixUp / CutMix of images and their float targets (torchvision.transforms.v2.MixUp, CutMix): one-hot rows of
    the class tasks (after label smoothing, which composes), the regression targets and tag vectors alike."""
    mixup_alpha: NonNegativeFloat = 0.0       # Beta(alpha, alpha) mixing weights; 0: no MixUp
    cutmix_alpha: NonNegativeFloat = 0.0      # 0: no CutMix; both > 0: one of the two per batch, at random
    prob: Annotated[float, Field(ge=0, le=1)] = 1.0
    off_epochs: NonNegativeInt = 0            # no mixing in the run's last N epochs (timm's mixup-off-epoch)


class EmaOptions(Schema):
    """An exponential moving average of the weights (timm's ModelEmaV3), updated every optimiser step."""
    decay: Annotated[float, Field(ge=0, lt=1)] = 0.0  # 0: no EMA
    warmup: bool = True                                # ModelEmaV3's use_warmup: the decay ramps up from 0


class EvalOptions(Schema):
    every: PositiveInt = 1
    parts: list[Literal["oof", "test", "train"]] = ["oof", "test"]
    train_epochs: list[PositiveInt] = []
    batch_size: PositiveInt = 128
    # What each eval npz keeps (common.rundir.VIEW_FORMS): `all` 8 views (the stack's max/min/var need them),
    # `mean` the views' mean only (8x smaller: a probability ensemble needs no more), `mean_identity` the mean and
    # the identity view; `float16` halves it again (probabilities and embeddings; not a regression in raw units).
    views: Literal["all", "mean", "mean_identity"] = "all"
    dtype: Literal["float32", "float16"] = "float32"


# Upper bounds where a larger value can only be a typo (`epochs=1e12`, `lr=1e3`, `warmup_epochs=inf`): generous
# enough for any real run, small enough that a slip is refused naming the key instead of training for a century.
MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_IMAGE_SIDE = 8_192
MAX_LR = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_STEPS = 10_000_000
Epochs = Annotated[int, Field(gt=0, le=MAX_EPOCHS)]
Side = Annotated[int, Field(ge=8, le=MAX_IMAGE_SIDE)]
Lr = Annotated[float, Field(gt=0, le=MAX_LR)]
WeightDecay = Annotated[float, Field(ge=0, le=MAX_WEIGHT_DECAY)]


class RunConfig(Schema):
    """One experiment x one split: what train.py, evaluate.py and the launcher read (parameters/base.yml)."""
    exp: Name                                   # the run directory's prefix; the loader defaults it to the file's stem
    split: Name | None = None                   # set by train.py in the run's config.yml
    dataroot: Text = "datasets/emoji"
    checkpoints_dir: Text = "runs"
    folds: Annotated[int, Field(ge=2)] = 3
    seed: NonNegativeInt = 0
    seed_offset: NonNegativeInt = 0             # added to seed for the run's own draws (engine.trainer)
    task: Text = "target"
    backbone: Text = "resnet34"
    pretrained: bool = False
    stem: Literal["imagenet", "small", "strided"] = "imagenet"
    width: Annotated[int, Field(ge=4, le=1024)] = 64
    drop_path: Annotated[float, Field(ge=0, lt=1)] = 0.0
    image_size: Side | tuple[Side, Side] = 224
    resize: Literal["pad", "squish", "crop"] = "pad"
    image_cache: Literal["decoded", "png"] = "decoded"  # png: the same pixels kept encoded (data.encoded)
    w2v_dim: PositiveInt = 20
    tags_min_objects: PositiveInt = 100
    transfer_from: Text | None = None
    transfer: Literal["backbone", "full"] = "backbone"  # full: every weight (heads, CLIP's towers and temperature)
    freeze: Literal["none", "last_half", "layer34", "head", "fine_tune"] = "none"
    unfreeze_epoch: Epochs = 2
    head_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    head: Literal["linear", "arcface"] = "linear"
    epochs: Epochs = 20
    max_steps: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 0  # > 0: train this many optimiser steps, not `epochs`
    save_every_steps: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 0  # mid-epoch resume points (step{N}.pth)
    eval_every_steps: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 0  # kept step{N}.pth the watcher evaluates
    reset_optimizer: bool = False               # a resume starts the optimiser's state afresh (lr keeps its step)
    reset_data_offset: bool = False             # a mid-epoch resume restarts its epoch from the first batch
    batch_size: Annotated[int, Field(ge=2, le=MAX_BATCH)] = 64
    effective_batch_size: Annotated[int, Field(ge=2, le=16 * MAX_BATCH)] = 64
    lr: Lr = 1.0e-3
    weight_decay: WeightDecay = 1.0e-2
    layer_decay: Annotated[float, Field(gt=0, le=1)] = 1.0
    schedule: Literal["cosine", "onecycle"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0, le=MAX_EPOCHS)] = 1
    augment: Literal["dihedral", "none"] = "dihedral"
    augmentation: AugmentationOptions = AugmentationOptions()
    mixup: MixOptions = MixOptions()
    ema: EmaOptions = EmaOptions()
    amp: Literal["bf16", "fp16", "none"] = "bf16"
    channels_last: bool = True
    cpu_extras: bool | Literal["auto", "channels_last"] = False  # amp (bf16) and channels_last on the CPU too, or
                                                                  # channels_last alone; auto: by the CPU (engine.setup)
    sync_bn: bool = False                       # SyncBatchNorm over the ranks of a multi-rank (torchrun) run
    grad_compression: Literal["none", "fp16", "bf16"] = "none"  # DDP's gradients cast for the all-reduce
    deterministic: bool = False
    num_workers: NonNegativeInt = 2
    threads: NonNegativeInt = 0
    log_every: PositiveInt = 20
    keep_last: NonNegativeInt = 0
    jigsaw: JigsawOptions = JigsawOptions()
    mim: MimOptions = MimOptions()
    clip: ClipOptions = ClipOptions()
    arcface: ArcFaceOptions = ArcFaceOptions()
    eval: EvalOptions = EvalOptions()


# Keys that do not change what a run computes, so changing them neither makes a run stale nor blocks --resume:
# where things are (contents are fingerprinted separately), how fast or how chatty, what is evaluated and saved,
# `epochs` and `max_steps`, which a resume may raise to extend a finished run, and what a resume resets.
RUN_VOLATILE_KEYS = ("exp", "split", "dataroot", "checkpoints_dir", "num_workers", "threads", "log_every",
                     "keep_last", "eval", "epochs", "image_cache", "max_steps", "save_every_steps",
                     "eval_every_steps", "reset_optimizer", "reset_data_offset", "grad_compression")


# ---------------------------------------------------------------------------------------------------- stacking

Scalar = Annotated[bool | int | float | str | None, Field(union_mode="left_to_right")]


class SearchRange(Schema):
    """One key of a study's search space (tune.py): a range (`low`..`high`, `log` scale, `step`; int when both
    ends and the step are ints) or a list of `choices` (plain values: numbers, strings, booleans, null)."""
    low: StrictInt | float | None = Field(None, union_mode="left_to_right")
    high: StrictInt | float | None = Field(None, union_mode="left_to_right")
    log: bool = False
    step: StrictInt | float | None = Field(None, union_mode="left_to_right")
    choices: list[Scalar] | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("either choices or low/high (with log, step), not both")
            if not self.choices:
                raise ValueError("choices is empty: give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected low and high (a range) or choices (a list)")
        if not self.low <= self.high:
            raise ValueError(f"empty range: low {self.low} > high {self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log scale: low must be > 0 and there is no step")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step {self.step}: must be > 0")
        return self

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step or 1))


LGBM_PARAMS = {"boosting": "gbdt", "objective": "regression", "metric": "rmse", "learning_rate": 0.05,
               "num_leaves": 31, "feature_fraction": 0.9, "bagging_fraction": 0.8, "bagging_freq": 5,
               "num_threads": 0, "verbose": -1}


LGBM_SPACE = {"num_leaves": {"low": 4, "high": 64, "log": True},
              "min_data_in_leaf": {"low": 5, "high": 100, "log": True},
              "feature_fraction": {"low": 0.3, "high": 1.0},
              "lambda_l2": {"low": 1.0e-3, "high": 10.0, "log": True}}


class LgbmTuneOptions(Schema):
    """The level-2 LightGBM's own tuning (stack.py `lgbm.tune`): `trials` TPE trials over `space` (LightGBM
    parameters) per fit, each scored by LightGBM's validation metric (lower is better: rmse, l2, l1, *logloss) at
    its early-stopped round, averaged over the fit's inner splits."""
    trials: PositiveInt = 20
    space: dict[Text, SearchRange] = LGBM_SPACE


class LgbmOptions(Schema):
    params: dict[str, Any] = LGBM_PARAMS  # a file's params are added to (or replace) these, key by key

    @field_validator("params")
    @classmethod
    def _over_defaults(cls, value: dict) -> dict:
        return {**LGBM_PARAMS, **value}

    num_boost_round: PositiveInt = 10000
    early_stopping_rounds: PositiveInt = 100
    coef: Annotated[float, Field(gt=0)] = 1.0
    # models averaged per fit, LightGBM seeds seed, seed + 1, ...: on a few thousand rows one model's CV moves by
    # ~0.01 RMSE with its seed (bagging, feature sampling), more than most of the choices being compared
    bag: PositiveInt = 1
    # null, or an Optuna study per fit on its training rows alone (stacking.tune): the parameters that early-stop
    # best on the fit's inner splits; the rows a fit is scored on never help choose them (nested)
    tune: LgbmTuneOptions | None = None


class PostprocessGrid(Schema):
    """The grids the post-processing searches; each needs at least one value (a fixed one to switch a step off)."""
    ratio: Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=1)] = [
        0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    thr: Annotated[list[float], Field(min_length=1)] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.01]
    width: Annotated[list[NonNegativeFloat], Field(min_length=1)] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


class EnsembleOptions(Schema):
    runs: dict[str, EpochSpec] = {"onehot": "last"}
    factor: NonNegativeFloat = 25
    # hand-set weight per run (normalised); empty: weighted by score; "oof": searched on out-of-fold predictions
    weights: dict[str, NonNegativeFloat] | Literal["oof"] = {}
    weight_step: Annotated[float, Field(gt=0, le=0.5)] = 0.05  # the grid step of `weights: oof`
    test_features: Literal["all", "fold_mean"] = "all"
    redistribute_k: NonNegativeInt = 0
    submit: Literal["argmax", "redistributed"] = "argmax"
    pseudo_thr: Annotated[float, Field(ge=0, le=1)] = 0.45
    pseudo_factor: NonNegativeFloat = 0  # the score factor of the ensemble pseudo labels come from (0: plain mean)
    pseudo_cumulative: bool = False  # a round keeps the earlier rounds' rows it does not relabel
    pixel_stats: bool = False  # also a multiclass LightGBM on the photos' pixel features, a member named "pixels"
    probabilities: Literal["csv", "npy", "none"] = "csv"  # the test probabilities file beside the submission


class CleanOptions(Schema):
    """`stack.py clean` (stacking.clean): which run's out-of-fold class probabilities judge the labels."""
    exp: Name = "onehot"  # one of `runs`, read at its epoch there
    suffix: Name = "_clean"
    filter_by: Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                       "predicted_neq_given"] = "prune_by_noise_rate"


class StackConfig(Schema):
    """stack.py / ensemble.ipynb (parameters/stack.yml)."""
    exp: Name = "stack"
    dataroot: Text = "datasets/emoji"
    checkpoints_dir: Text = "runs"
    folds: Annotated[int, Field(ge=3)] = 3  # the stack picks its rounds on an inner split of K-1 folds
    seed: NonNegativeInt = 0
    split_suffix: Text = ""
    runs: dict[str, EpochSpec] = {"target": "last", "onehot": "last", "sortingdate": "last",
                                  "materialstechniques": "last"}
    aggregations: Text = "mean,max,min,var"
    raw_views: bool = False
    pixel_stats: bool = False
    tag_features: bool = False
    test_features: Literal["all", "fold_mean"] = "all"
    infold: Literal["auto"] | bool = "auto"
    allow_unfinished: bool = False  # stack runs without DONE (still training or failed); refused by default
    lgbm: LgbmOptions = LgbmOptions()
    blend_exp: Text | None = "auto"
    onehot_exp: Text | None = "auto"
    postprocess_keep: Literal["if_nested_helps", "always", "never"] = "if_nested_helps"
    postprocess: PostprocessGrid = PostprocessGrid()
    out_dir: Text = "submissions"
    answers: Text | None = None
    ensemble: EnsembleOptions = EnsembleOptions()
    clean: CleanOptions = CleanOptions()


# ---------------------------------------------------------------------------------------------------- retrieval

class TtlConfig(Schema):
    """Test-time learning (retrieval.ttl; parameters/ttl.yml): K contrastive steps on a cache of (query text,
    image) pairs, on a copy of a clip run's model, before predicting. The defaults are what
    retrieval.ttl_select chose on the valid split's cache for the demo's runs (never on test answers)."""
    exp: Name = "ttl"
    steps: Annotated[int, Field(ge=0, le=MAX_STEPS)] = 600
    lr: Lr = 3e-4
    adapt: Literal["all", "heads", "text", "projections"] = "all"  # which weights move (retrieval.ttl.ADAPT)
    batch_size: Annotated[int, Field(ge=0, le=MAX_BATCH)] = 64  # pairs per step, drawn at random; 0: all of them
    weight_decay: WeightDecay = 0.0
    temperature: Annotated[float, Field(gt=0)] | None = 0.1  # null: the run's learned one (trained along)


# ---------------------------------------------------------------------------------------------------- recipe

class Word2VecOptions(Schema):
    dim: PositiveInt = 20
    epochs: PositiveInt = 100


# what a recipe (and the ablations and studies built on one) sets in every run itself: no --set list may move them
RECIPE_ROW_KEYS = ("exp", "seed", "checkpoints_dir", "dataroot", "folds", "split")


def _row_sets(sets: list[str], reserved: tuple[str, ...] = RECIPE_ROW_KEYS, owner: str = "the ablation's own"
              ) -> list[str]:
    """`key=value` items, none of them moving a `reserved` key."""
    for item in sets:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or not key:
            raise ValueError(f"{item!r}: expected key=value")
        if key.split(".")[0] in reserved:
            raise ValueError(f"{item!r}: {key} is {owner} ({', '.join(reserved)})")
    return sets


class RecipeConfig(Schema):
    """recipe.py, the main job (parameters/recipe.yml): names the other configs and what they share."""
    exp: Name = "recipe"
    dataset: Literal["emoji", "emoji_classify"] | None = "emoji"
    dataroot: Text = "datasets/emoji"
    answers: Text | None = "datasets/emoji_private/answers.csv"
    test_tags: bool = False  # dataset: emoji only; true keeps the test objects' tags in the dataroot
    folds: Annotated[int, Field(ge=3)] = 3  # the stack picks its rounds on an inner split of K-1 folds
    fold_batch_size: NonNegativeInt = 64
    seed: NonNegativeInt = 0
    word2vec: Word2VecOptions | None = Word2VecOptions()  # null: no tag vectors (a competition without tags)
    devices: Text = "0,1,2,3"
    pretext: Text | None = "parameters/jigsaw.yml"       # null: the tasks train from scratch
    tasks: list[Text] = ["parameters/target.yml", "parameters/onehot.yml", "parameters/sortingdate.yml",
                         "parameters/materialstechniques.yml"]
    stack: Text = "parameters/stack.yml"
    pseudo_rounds: NonNegativeInt = 0
    clean: bool = False  # a cleaned round: stack.py clean, every task again on the {split}_clean splits, stacked
    baselines: bool = False  # also score the constant and pixel-statistics LightGBM on the same folds and answers
    checkpoints_dir: Text | None = None  # null: each config's own; a folder: every run and the stacking use it
    run_set: list[Text] = []  # key=value every run (pretext and tasks) takes after its own file, e.g. a CPU's layout

    @field_validator("run_set")
    @classmethod
    def _run_set(cls, sets: list[str]) -> list[str]:
        return _row_sets(sets, (*RECIPE_ROW_KEYS, "w2v_dim"), "the recipe's or the launcher's")

    def overrides(self) -> list[str]:
        """The `key=value` settings every run and the stacking take from the recipe, so that one --set dataroot=...
        (or folds, seed, checkpoints_dir: a second seed or dataset beside the first) moves them all."""
        moved = [f"dataroot={self.dataroot}", f"folds={self.folds}", f"seed={self.seed}"]
        return moved + ([f"checkpoints_dir={self.checkpoints_dir}"] if self.checkpoints_dir is not None else [])


# ---------------------------------------------------------------------------------------------------- ablation


def _distinct(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds}: each seed once (a repeated seed would count one run twice)")
    return seeds


Seeds = Annotated[list[NonNegativeInt], Field(min_length=1), AfterValidator(_distinct)]


class AblationConfig(Schema):
    """ablation.py / `make ablation` (parameters/ablation/cpu.yml, gpu.yml)."""
    exp: Name = "ablation"                       # the loader's default (the file's stem); names nothing else
    recipe: Text = "parameters/demo/recipe.yml"  # its dataset, folds, pretext, tasks and stack are the base
    recipe_set: dict[str, Any] = {}              # overrides of the recipe, as --set would give them
    out_dir: Text = "results/cpu"                # RESULTS.md, results.json, report.html, stacks/, baselines/
    scratch: bool = True                         # rows 3 and 4: the target run with and without the pretext
    pretext: Text | None = None                  # the pretext run of rows 4 and 5 where the recipe has none
    freeze_modes: list[Literal["none", "layer34", "head", "fine_tune"]] = ["none", "layer34", "head", "fine_tune"]
    soup: NonNegativeInt = 2                     # uniform soup of the last N epochs of row 3/4's variant (0/1: none)
    pseudo: bool = True                          # one pseudo-label round from the post-processed stack (row 11)
    # every row is measured once per seed (the runs' and stacks' `seed`: init, order, augmentation; the folds and
    # tag vectors stay the recipe's); verdicts from seeds x folds and the two halves of this list (ablation.table)
    seeds: Seeds = [0, 1, 2]



# ---------------------------------------------------------------------------------------------------- recipe rows

# a variant's epoch choice: the last epoch, epoch E, the EMA weights (`ema`: of the last epoch, `ema{E}`), or the
# uniform soup of the last N epochs (`soup{N}`); never `best`, which would choose on the rows it is scored on
VariantEpoch = Annotated[Literal["last"] | PositiveInt | SoupTag | EmaTag, Field(union_mode="left_to_right")]


class VariantOptions(Schema):
    """One training-recipe variant (ablation_recipe.py): the task config with `set`, scored at `epoch`."""
    set: list[Text] = []          # key=value overrides of the task config (after the config's task_set)
    epoch: VariantEpoch = "last"  # which weights of each fold run are scored
    runs: Name | None = None      # read another variant's runs (with this epoch) instead of training its own
    against: Name | None = None   # the variant its claim compares it with (null: the base)
    pretext: Text | None = None   # a pretext config (jigsaw, simmim) trained on split `all` first; the variant
    pretext_set: list[Text] = []  # transfers from it (its set, before the recipe's keys)
    clean_from: Name | None = None  # train on the splits `stack.py clean` makes from this variant's runs
    claim: Text | None = None     # the claim's text (null: "{name} beats {against}")

    @field_validator("set", "pretext_set")
    @classmethod
    def _sets(cls, sets: list[str]) -> list[str]:
        return _row_sets(sets)


class RecipeAblationConfig(Schema):
    """ablation_recipe.py / `make ablation-recipe` (parameters/ablation/recipe/*.yml): one task config trained per
    variant on the K fold splits, for each seed, each variant judged against the base by the task's primary
    metric out of fold (fold0123.ablation.variants)."""
    exp: Name = "recipe_rows"                    # the loader's default (the file's stem); names nothing else
    recipe: Text = "parameters/demo/recipe.yml"  # its dataset, dataroot, folds, devices (and the baselines' bag)
    recipe_set: dict[str, Any] = {}              # overrides of the recipe, as --set would give them (e.g. folds)
    task: Text = "parameters/demo/target.yml"    # the one task config every variant trains
    task_set: list[Text] = []                    # overrides every variant takes first, e.g. [transfer_from=null]
    runs_dir: Text = "runs/demo_recipe"          # seed S's runs: {runs_dir}/seed{S}/{variant}_{split}
    out_dir: Text = "results/cpu_recipe"         # RESULTS.md, results.json, timings.json, baselines/
    seeds: Seeds = [0, 1]
    baselines: bool = True                       # the constant and pixel-statistics LightGBM rows, same folds
    base_variant: Name = "base"                  # the variant every claim compares with (unless `against`)
    variants: dict[Name, VariantOptions] = {"base": VariantOptions()}

    @field_validator("task_set")
    @classmethod
    def _sets(cls, sets: list[str]) -> list[str]:
        return _row_sets(sets)

    @model_validator(mode="after")
    def _names(self):
        if self.base_variant not in self.variants:
            raise ValueError(f"base_variant {self.base_variant!r} is not a variant ({', '.join(self.variants)})")
        training = [n for n, v in self.variants.items() if v.runs is None]
        for name, variant in self.variants.items():
            if variant.runs is not None:
                if variant.runs not in training:
                    raise ValueError(f"variant {name}: runs {variant.runs!r} must name a variant that trains (one "
                                     f"without runs: {', '.join(training)})")
                if variant.set or variant.pretext or variant.clean_from:
                    raise ValueError(f"variant {name}: reads {variant.runs}'s runs, so it has no set, pretext or "
                                     f"clean_from of its own")
            if variant.clean_from is not None and (variant.clean_from not in training or variant.clean_from == name):
                raise ValueError(f"variant {name}: clean_from {variant.clean_from!r} must name another variant that "
                                 f"trains ({', '.join(training)})")
            if variant.against is not None and (variant.against not in self.variants or variant.against == name):
                raise ValueError(f"variant {name}: against {variant.against!r} must name another variant")
        return self


# ---------------------------------------------------------------------------------------------------- tuning

class TuneConfig(Schema):
    """tune.py / `make tune` (parameters/tune/*.yml): an Optuna study whose trials are fold0123 runs of one task
    config, each trial the config with the trial's values of `space` on the recipe's K fold splits, one fold after
    another, pruned fold by fold (fold0123.tuning)."""
    exp: Name = "tune"                           # the study's name (default: the file's stem); names its runs
    recipe: Text = "parameters/demo/recipe.yml"  # its dataset, dataroot, folds (made with its seed) and devices
    run: Text = "parameters/demo/target.yml"     # the task config every trial trains
    set: list[Text] = []                         # overrides every trial takes first (before the trial's values)
    space: dict[Text, SearchRange] = {}          # run-config key (dotted) -> its range or choices
    enqueue: list[dict[Text, Scalar]] = []       # trials to run first, as given ({}: the run config as it is)
    trials: PositiveInt = 8                      # finished trials (complete or pruned) the study stops at
    sampler: Literal["tpe", "random"] = "tpe"
    seed: NonNegativeInt = 0                     # the sampler's seed (the runs' seed is the recipe's)
    pruner: Literal["median", "none"] = "median"
    startup_trials: NonNegativeInt = 2           # MedianPruner: no pruning before this many trials finished
    epoch: Literal["last", "ema"] = "last"       # which weights of each fold run are scored (what the watcher
                                                 # evaluates: the last epoch, or its EMA)
    runs_dir: Text | None = None                 # the trials' runs: {runs_dir}/{exp}_t{N}_{split} (null: the
                                                 # recipe's checkpoints_dir, beside its pretext run)
    out_dir: Text | None = None                  # study.db, TUNE.md, trials.csv, tune.json, report.html
                                                 # (null: results/tune/{exp})
    storage: Text | None = None                  # an Optuna storage URL (null: sqlite:///{out_dir}/study.db)
    devices: Text | None = None                  # one worker per device or group, `/`-separated (null: the
                                                 # recipe's first device); tune.py --devices overrides
    executor: Literal["tmux", "local", "slurm"] = "tmux"  # how each fold row runs (launch.py's executors)
    heartbeat_s: Annotated[int, Field(ge=1, le=3600)] = 60  # a worker silent 2x this long is dead: its trial is
                                                 # failed and retried (its runs resumed), never counted twice
    rerun_seeds: list[NonNegativeInt] = [1, 2]   # the winner trained again with these run seeds: its CV then
                                                 # was not used to choose it

    @field_validator("set")
    @classmethod
    def _sets(cls, sets: list[str]) -> list[str]:
        return _row_sets(sets)

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict) -> dict:
        for key in space:
            if key.split(".")[0] in RECIPE_ROW_KEYS:
                raise ValueError(f"space key {key!r}: the study sets it itself ({', '.join(RECIPE_ROW_KEYS)})")
        return space

    @field_validator("enqueue")
    @classmethod
    def _enqueued(cls, enqueue: list[dict], info: ValidationInfo) -> list[dict]:
        space = info.data.get("space", {})
        for i, trial in enumerate(enqueue):
            unknown = sorted(set(trial) - set(space))
            if unknown:
                raise ValueError(f"enqueue[{i}]: {unknown[0]!r} is not a key of space ({', '.join(space)})")
        return enqueue

    @property
    def results_dir(self) -> str:
        return self.out_dir or f"results/tune/{self.exp}"
