import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fold0123.common.config import ConfigError, load_config
from fold0123.common.io import atomic_path, is_temporary, write_text
from fold0123.common.schema import (AblationConfig, RecipeAblationConfig, RecipeConfig, RunConfig, StackConfig,
                                    TtlConfig, TuneConfig)
from fold0123.tuning.space import check_space
from tests.conftest import ROOT


def test_base_chain_overrides_and_defaults(tmp_path):
    (tmp_path / "base.yml").write_text("lr: 0.1\nepochs: 10\njigsaw: {grid: 3, permutation_set: hamming}\n")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "target.yml").write_text("base: ../base.yml\nepochs: 2\n")
    cfg = load_config(tmp_path / "demo" / "target.yml", ["lr=3e-4", "jigsaw.permutation_set=random", "keep_last=2"],
                      schema=RunConfig)
    assert (cfg.lr, cfg.epochs, cfg.keep_last, cfg.exp) == (3e-4, 2, 2, "target")
    assert cfg.jigsaw.permutation_set == "random" and cfg.jigsaw.grid == 3
    assert cfg.backbone == RunConfig.model_fields["backbone"].default  # a key no file sets has the schema's default
    with pytest.raises(Exception):
        cfg.lr = 1.0  # frozen: the code never edits a resolved config


@pytest.mark.parametrize("override, message", [
    ("lr", "--set 'lr': expected key=value"),
    ("lrr=1", "--set lrr=1: unknown key 'lrr'"),
    ("jigsaw.gird=2", "--set jigsaw.gird=2: unknown key 'jigsaw.gird'"),
    ("epochs=2.5", "--set epochs=2.5: key 'epochs': .*integer"),
    ("epochs=0", "--set epochs=0: key 'epochs': .*greater than 0"),
    ("batch_size=-8", "key 'batch_size': .*greater than or equal to 2"),
    ("warmup_epochs=-1", "key 'warmup_epochs'"),
    ("threads=-1", "key 'threads'"),
    ("eval.parts=[bogus]", "key 'eval.parts.0': .*'oof', 'test' or 'train'"),
    ("freeze=layer5", "key 'freeze'"),
    ("jigsaw=3", "key 'jigsaw': .*dictionary"),
    ("epochs=ten", "--set epochs=ten: key 'epochs': .*integer"),
    ("batch_size=0", "key 'batch_size': .*greater than or equal to 2"),
    ("exp=../esc", "key 'exp': .*path separator"),
    ("exp=..", "key 'exp': .*relative folder name"),
    ("split=a/b", "key 'split': .*path separator"),
    # issue 22: values that can only be typos are refused by the schema's upper bounds
    ("epochs=1e12", "--set epochs=1e12: key 'epochs': .*less than or equal to 10000"),
    ("epochs=1000000", "key 'epochs': .*less than or equal to 10000"),
    ("batch_size=10000000", "key 'batch_size': .*less than or equal to 65536"),
    ("image_size=100000", "key 'image_size'"),
    ("lr=1e3", "--set lr=1e3: key 'lr': .*less than or equal to 10"),
    ("lr=inf", "key 'lr': .*finite number"),  # the schema refuses inf and nan everywhere
    ("warmup_epochs=inf", "key 'warmup_epochs': .*(finite number|less than or equal to 10000)"),
    ("weight_decay=inf", "key 'weight_decay': .*finite number"),
])
def test_bad_overrides_are_one_line_naming_the_set_and_key(tmp_path, override, message):
    (tmp_path / "c.yml").write_text("lr: 0.1\njigsaw: {grid: 3}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path / "c.yml", [override], schema=RunConfig)
    assert "\n" not in str(err.value)


def test_delete_replaces_the_bases_mapping_instead_of_merging_into_it(tmp_path):
    """mmengine's `_delete_: true`: the only way a preset drops a key its base sets (the demo's stack reads three
    runs where parameters/stack.yml names four)."""
    (tmp_path / "root.yml").write_text("runs: {target: last, onehot: last, sortingdate: 3}\nlgbm: {bag: 2}\n")
    (tmp_path / "merged.yml").write_text("base: root.yml\nruns: {onehot: 5}\n")
    (tmp_path / "replaced.yml").write_text("base: root.yml\nruns: {_delete_: true, onehot: 5}\n")
    (tmp_path / "above.yml").write_text("base: replaced.yml\nruns: {target: best}\n")
    assert load_config(tmp_path / "merged.yml", schema=StackConfig).runs == {"target": "last", "onehot": 5,
                                                                             "sortingdate": 3}
    replaced = load_config(tmp_path / "replaced.yml", schema=StackConfig)
    assert replaced.runs == {"onehot": 5} and replaced.lgbm.bag == 2  # the other mappings still merge
    assert load_config(tmp_path / "above.yml", schema=StackConfig).runs == {"onehot": 5, "target": "best"}
    (tmp_path / "kept.yml").write_text("base: root.yml\nruns: {_delete_: false, onehot: 5}\n")  # merges, unmarked
    assert load_config(tmp_path / "kept.yml", schema=StackConfig).runs == {"target": "last", "onehot": 5,
                                                                           "sortingdate": 3}
    for given in ("{onehot: 5}", "{_delete_: true, onehot: 5}"):  # a --set mapping replaces the file's anyway
        assert load_config(tmp_path / "merged.yml", [f"runs={given}"], schema=StackConfig).runs == {"onehot": 5}
    (tmp_path / "bad.yml").write_text("base: root.yml\nruns: {_delete_: yes please, onehot: 5}\n")
    with pytest.raises(ConfigError, match=r"bad.yml: key runs._delete_: expected true or false"):
        load_config(tmp_path / "bad.yml", schema=StackConfig)


def test_a_list_of_bases_merges_in_order_under_the_file(tmp_path):
    """`base: [a, b]` as mmengine's `_base_`: a, then b over it (each after its own bases), then the file itself."""
    (tmp_path / "root.yml").write_text("lr: 0.1\nepochs: 10\nkeep_last: 4\neval: {every: 1, batch_size: 8}\n")
    (tmp_path / "a.yml").write_text("base: root.yml\nlr: 0.2\nepochs: 5\n")
    (tmp_path / "b.yml").write_text("epochs: 7\nlog_every: 3\neval: {every: 2}\n")
    (tmp_path / "c.yml").write_text("base: [a.yml, b.yml]\nlog_every: 9\n")
    cfg = load_config(tmp_path / "c.yml", schema=RunConfig)
    assert (cfg.lr, cfg.epochs, cfg.keep_last, cfg.log_every, cfg.exp) == (0.2, 7, 4, 9, "c")
    assert (cfg.eval.every, cfg.eval.batch_size) == (2, 8)  # groups merge key by key, the later base winning
    (tmp_path / "b.yml").write_text("epochs: 7\neval: {evrey: 2}\n")
    with pytest.raises(ConfigError, match=r"b.yml: unknown key 'eval.evrey'"):  # the file that set it
        load_config(tmp_path / "c.yml", schema=RunConfig)
    demo = load_config(ROOT / "parameters/demo/target.yml", schema=RunConfig)  # [../target.yml, task.yml]
    task = yaml.safe_load((ROOT / "parameters/demo/task.yml").read_text())  # task.yml over ../target.yml
    cpu = yaml.safe_load((ROOT / "parameters/demo/cpu.yml").read_text())  # task.yml's own base
    assert (demo.task, demo.image_size, demo.epochs, demo.eval.every, demo.exp) == (
        "target", cpu["image_size"], task["epochs"], task["eval"]["every"], "target")
    assert demo.image_size != 224 and (demo.epochs, demo.eval.every) != (20, 1)  # ../target.yml's, base.yml's


@pytest.mark.parametrize("base, message", [
    ("[a.yml, missing.yml]", r"c.yml: key 'base': config file .*missing.yml not found"),
    ("[a.yml, 3]", r"c.yml: key 'base': expected the path of another config file or a list of them "
                   r"\(got \['a.yml', 3\]\)"),
    ("{a: 1}", r"c.yml: key 'base': expected the path .*\(got \{'a': 1\}\)"),
])
def test_a_bad_base_list_is_one_line_naming_the_file(tmp_path, base, message):
    (tmp_path / "a.yml").write_text("lr: 0.2\n")
    (tmp_path / "c.yml").write_text(f"base: {base}\nepochs: 2\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(tmp_path / "c.yml", schema=RunConfig)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("postprocess.ratio=[]", "key 'postprocess.ratio': List should have at least 1 item"),
    ("postprocess.width=[]", "key 'postprocess.width'"),
    ("exp=x/../../y", "key 'exp': .*path separator"),
])
def test_bad_stack_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(ROOT / "parameters/stack.yml", [override], schema=StackConfig)
    assert "\n" not in str(err.value)


def test_stack_runs_of_the_wrong_type_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"--set runs=\[a, b\]: key 'runs': .*dictionary"):
        load_config(ROOT / "parameters/stack.yml", ["runs=[a, b]"], schema=StackConfig)
    cfg = load_config(ROOT / "parameters/demo/stack.yml", ["runs={target: 3}"], schema=StackConfig)
    assert cfg.runs == {"target": 3} and cfg.lgbm.params["num_threads"] == 2
    assert cfg.lgbm.params["feature_fraction"] == 0.2
    assert cfg.lgbm.params["learning_rate"] == 0.05  # a file changes its params key by key, the rest stay


def test_a_typo_in_a_file_names_the_file_that_set_it(tmp_path):
    (tmp_path / "base.yml").write_text("lr: 0.1\neval: {every: 1}\n")
    (tmp_path / "child.yml").write_text("base: base.yml\nepochs: 3\neval: {evrey: 2}\n")
    with pytest.raises(ConfigError, match=r"child.yml: unknown key 'eval.evrey'"):
        load_config(tmp_path / "child.yml", schema=RunConfig)
    (tmp_path / "base.yml").write_text("lr: fast\n")
    with pytest.raises(ConfigError, match=r"base.yml: key 'lr': .*number"):
        load_config(tmp_path / "child.yml", schema=RunConfig)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yml", schema=RunConfig)
    (tmp_path / "a.yml").write_text("base: b.yml\n")
    (tmp_path / "b.yml").write_text("base: a.yml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yml", schema=RunConfig)
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yml", schema=RunConfig)


def _leaf_keys(mapping: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in mapping.items():
        if isinstance(value, dict) and key not in ("params", "runs"):  # free-form maps: their keys are data
            out |= _leaf_keys(value, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


@pytest.mark.parametrize("path, schema", [("base.yml", RunConfig), ("stack.yml", StackConfig),
                                          ("recipe.yml", RecipeConfig), ("ttl.yml", TtlConfig)])
def test_the_documenting_file_and_the_schema_agree_key_for_key_and_on_defaults(path, schema):
    """parameters/{base,stack,recipe,ttl}.yml document every key of their schema with its default: neither may
    have a key the other lacks, and the values are the schema's defaults (one home for defaults, two views)."""
    documented = yaml.safe_load((ROOT / "parameters" / path).read_text())
    defaults = schema(exp="x").model_dump(mode="json")
    set_elsewhere = {"exp", "split"}  # the loader (file stem) and train.py (the split) set these
    assert _leaf_keys(documented) == _leaf_keys(defaults) - set_elsewhere
    for key in documented:
        assert documented[key] == defaults[key], key


def test_every_shipped_config_validates():
    for path in sorted((ROOT / "parameters").rglob("*.yml")):
        schema = (StackConfig if path.stem == "stack" else RecipeConfig if path.stem == "recipe"
                  else TtlConfig if path.stem == "ttl"
                  else RecipeAblationConfig if path.parent.relative_to(ROOT).as_posix() == "parameters/ablation/recipe"
                  else AblationConfig if path.parent.name == "ablation"
                  else TuneConfig if path.parent.name == "tune" else RunConfig)
        cfg = load_config(path, schema=schema)
        if schema is TuneConfig:  # its run config takes each value of its space
            check_space(cfg.run, cfg.space, list(cfg.set), [])


@pytest.mark.parametrize("preset, schema, folds", [
    ("ablation/cpu.yml", AblationConfig, 3), ("ablation/cpu_5fold.yml", AblationConfig, 5),
    ("ablation/cpu_tags.yml", AblationConfig, 3), ("ablation/recipe/atmacup_cpu.yml", RecipeAblationConfig, 3),
    ("ablation/recipe/atmacup_cpu_64px.yml", RecipeAblationConfig, 3), ("tune/demo_cpu.yml", TuneConfig, 3)])
def test_the_presets_behind_the_results_tables_keep_the_split_they_were_made_on(preset, schema, folds):
    """The tables in results/ were made on the demo's 3 (or 5) folds and four tasks, with `all` runs predicting
    test; the demo has trained 5 folds of three tasks and no `all` run since (and stacks the runs it trains). Their
    presets must still resolve to the old split, tasks and test source, or their commands would no longer compute
    what the tables say."""
    cfg = load_config(ROOT / "parameters" / preset, schema=schema)
    recipe = load_config(ROOT / cfg.recipe, [f"{k}={v}" for k, v in getattr(cfg, "recipe_set", {}).items()],
                         schema=RecipeConfig)
    stack = load_config(ROOT / recipe.stack, recipe.overrides(), schema=StackConfig)
    assert (recipe.folds, stack.folds) == (folds, folds)
    assert (stack.test_features, stack.ensemble.test_features) == ("all", "all")
    four = ["target", "onehot", "sortingdate", "materialstechniques"]
    assert [Path(task).stem for task in recipe.tasks] == four and sorted(stack.runs) == sorted(four)
    demo = load_config(ROOT / "parameters/demo/recipe.yml", schema=RecipeConfig)
    demo_stack = load_config(ROOT / demo.stack, demo.overrides(), schema=StackConfig)
    assert demo_stack.test_features == "fold_mean"
    assert sorted(demo_stack.runs) == sorted(Path(task).stem for task in demo.tasks) != sorted(four)


def test_the_recipes_run_set_reaches_every_run_and_leaves_its_own_keys_alone(tmp_path):
    """`run_set` is what every run of a recipe takes after its own file: the demo's runs are channels-last on the
    CPU, the runs behind results/ stay NCHW; a run_set that would move a key the recipe sets itself is refused."""
    import torch

    from fold0123.engine.setup import uses_channels_last
    from fold0123.launcher.recipe import run_sets
    layouts = {}
    for name in ("demo/recipe.yml", "demo/three_folds_all/recipe.yml"):
        recipe = load_config(ROOT / "parameters" / name, schema=RecipeConfig)
        sets = run_sets(recipe)
        assert sets[len(sets) - len(recipe.run_set):] == recipe.run_set  # last: it wins over the run's own file
        run = load_config(ROOT / "parameters/demo/target.yml", run_sets(recipe), schema=RunConfig)
        layouts[name] = uses_channels_last(run, torch.device("cpu"))
    assert layouts == {"demo/recipe.yml": True, "demo/three_folds_all/recipe.yml": False}
    for bad, named in (("folds=5", "folds"), ("w2v_dim=8", "w2v_dim"), ("lr", "expected key=value")):
        (tmp_path / "r.yml").write_text(f"run_set: [{bad}]\n")
        with pytest.raises(ConfigError, match=f"r.yml: key 'run_set'.*{named}"):
            load_config(tmp_path / "r.yml", schema=RecipeConfig)


@pytest.mark.integration
def test_train_cli_reports_a_config_typo_in_one_line(tmp_path):
    (tmp_path / "c.yml").write_text(f"base: {ROOT / 'parameters/tiny/target.yml'}\nepohcs: 3\n")
    out = subprocess.run([sys.executable, "train.py", "--conf", str(tmp_path / "c.yml"), "--split", "3fold0"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0
    assert "c.yml: unknown key 'epohcs'" in out.stderr


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            assert is_temporary(tmp)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_text(target, "whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_only_a_dead_writers_temporaries_are_removed(tmp_path):
    from fold0123.common.io import remove_orphaned_temporaries

    dead = subprocess.Popen(["true"])
    dead.wait()  # a PID that has exited (and was reaped)
    orphan = tmp_path / f"3.pth.tmp.{dead.pid}"
    mine = tmp_path / f"4.pth.tmp.{os.getpid()}"
    final = tmp_path / "2.pth"
    for path in (orphan, mine, final):
        path.write_bytes(b"x")
    assert remove_orphaned_temporaries(tmp_path) == [orphan]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, final.name])
    assert remove_orphaned_temporaries(tmp_path / "missing") == []


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_previous_version(tmp_path):
    import errno

    from fold0123.common.io import DiskFullError

    target = tmp_path / "3.pth"
    target.write_text("epoch 2's weights")
    with pytest.raises(DiskFullError, match=r"3.pth: no space left on the device writing it \(0.0 MB written"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_text() == "epoch 2's weights" and [p.name for p in tmp_path.iterdir()] == ["3.pth"]


def test_a_full_disk_inside_torch_save_is_recognised_through_the_exception_chain(tmp_path):
    """torch.save reports its file object's ENOSPC as a RuntimeError ('unexpected pos ...') with the OSError as
    its context (seen on a real full tmpfs by tests/test_faults.py): still one DiskFullError line."""
    import errno

    from fold0123.common.io import DiskFullError, is_disk_full

    def chained():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(DiskFullError, match=r"4.pth: no space left on the device"):
        with atomic_path(tmp_path / "4.pth") as tmp:
            tmp.write_text("half")
            chained()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="unexpected pos"):  # the same error without ENOSPC is not a full disk
        with atomic_path(tmp_path / "4.pth"):
            raise RuntimeError("unexpected pos 704 vs 598")
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


@pytest.mark.parametrize("text, where", [
    ("lr: 0.1\nepochs: 3\nlr: 0.2\n", "key 'lr' given twice (lines 1 and 3)"),
    ("jigsaw:\n  grid: 3\n  grid: 4\n", "key 'grid' given twice (lines 2 and 3)"),
    ("eval: {every: 1, every: 2}\n", "key 'every' given twice (lines 1 and 1)"),
])
def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines(tmp_path, text, where):
    (tmp_path / "twice.yml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "twice.yml", schema=RunConfig)
    assert str(err.value) == f"{tmp_path / 'twice.yml'}: {where}: remove one"
    (tmp_path / "ok.yml").write_text("a: &x {grid: 3}\njigsaw:\n  <<: *x\n  grid: 4\n")  # a merge key overrides
    with pytest.raises(ConfigError, match="unknown key 'a'"):
        load_config(tmp_path / "ok.yml", schema=RunConfig)
