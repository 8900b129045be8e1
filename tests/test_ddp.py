"""One run over several ranks (issue 18, engine.distributed and engine.trainer): the launch environment, each
rank's share of the global micro-batch and its loss weight, and, with real gloo process groups on the CPU, the
2-rank run that ends with the 1-process run's weights, writes its run directory once, and fails naming the rank
that failed and resumes from there; plus the CPU paths of `amp: bf16` and `channels_last` (`cpu_extras`).

The 2-rank runs: the CLI through a real `torchrun` (python -m torch.distributed.run), the fault runs through
`torch.multiprocessing.start_processes` with fork (the child patches the task's loss to raise or SIGKILL itself on
one rank: nothing in the trainer knows about tests). conftest sets OMP_NUM_THREADS=1 before torch starts, which
keeps fork safe. The backbone is timm's convnext_atto (LayerNorm): BatchNorm's statistics are per rank unless
`sync_bn`, which torch runs on CUDA only, so a BatchNorm net could not match the 1-process run on CPU ranks.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fold0123.common import rundir
from fold0123.common.config import ConfigError
from fold0123.common.poll import wait_until
from fold0123.engine import distributed
from fold0123.engine.distributed import DistEnv, DistributedError, read_env
from fold0123.engine.setup import amp_dtype, cpu_extras_read, cpu_has_amx, sync_batchnorm, uses_channels_last
from fold0123.engine.trainer import (TrainError, as_started, check_world_size, epoch_batches, group_weights,
                                     rank_weight, train)
from fold0123.models.checkpoints import EMA_KEY, read_checkpoint
from tests.conftest import ROOT, Interrupt, cfg_with, interrupt_in_epoch_2, make_recipe_root, tiny_config

torch.set_num_threads(1)

# the equivalence run: split `all` has 47 train images, so with batch 12 (6 per rank) the epoch ends with a short
# micro-batch of 11 (ranks 5 and 6: unequal shares) in a second accumulation group of 23 images; EMA on
DDP_OVERRIDES = ("transfer_from=null", "backbone=convnext_atto", "width=64", "epochs=2", "batch_size=12",
                 "effective_batch_size=24", "augment=dihedral", "ema.decay=0.9", "ema.warmup=false")
SPLIT = "all"
# max |w_2 ranks - w_1 process| over every weight (and EMA weight) after 4 AdamW steps: measured 1.2e-6, the float
# rounding of the gradient average (weights are O(1)); the last epoch alone moves them by 1.5e-3
TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------------------- no processes

def test_the_environment_is_read_as_torchrun_and_slurm_set_it():
    assert read_env({}) == DistEnv() and not read_env({}).distributed
    env = read_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.is_main) == (3, 4, 1, False)
    assert read_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == distributed.SINGLE  # today's path
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert read_env(slurm) == DistEnv(5, 8, 1)
    assert read_env({**slurm, "SLURM_NTASKS": "1"}) == distributed.SINGLE  # one task: one process
    assert read_env({**slurm, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}) == DistEnv(0, 2, 0)  # torchrun wins
    with pytest.raises(DistributedError, match="WORLD_SIZE='two'"):
        read_env({"WORLD_SIZE": "two"})
    with pytest.raises(DistributedError, match="rank 4 of world size 4"):
        read_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_each_rank_takes_its_share_and_the_weights_give_the_global_mean():
    env = [DistEnv(r, 3, r) for r in range(3)]
    for n in (6, 7, 11):  # the trainer gives every rank at least 2 images
        parts = [distributed.rank_part(n, e) for e in env]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))  # contiguous, in order, all of them
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1
        # DDP averages over the W ranks: sum_r rank_weight_r * mean_r / W = the micro-batch's image mean * weight
        losses = torch.arange(float(n)) ** 2
        ddp = sum(rank_weight(0.25, n, p.stop - p.start, e) * losses[p].mean() for p, e in zip(parts, env)) / 3
        assert float(ddp) == pytest.approx(0.25 * float(losses.mean()))
    assert rank_weight(0.3, 8, 8, distributed.SINGLE) == 0.3  # exactly: one process computes what it did


def test_the_epoch_order_does_not_depend_on_the_world_size():
    one, two = epoch_batches(47, 12, 0, 3), epoch_batches(47, 12, 0, 3, world_size=2)
    assert one == two and [len(b) for b in one] == [12, 12, 12, 11]
    assert group_weights(one, 2) == [0.5, 0.5, 12 / 23, 11 / 23]
    # a short last micro-batch that would leave a rank under 2 images is dropped (one process: under 2)
    assert [len(b) for b in epoch_batches(26, 8, 0, 1)] == [8, 8, 8, 2]
    assert epoch_batches(26, 8, 0, 1, world_size=2) == epoch_batches(26, 8, 0, 1)[:3]


def test_batch_sizes_that_do_not_split_over_the_ranks_are_refused_in_one_line():
    cfg = cfg_with(tiny_config("target", Path("/nowhere"), Path("/nowhere/runs")), batch_size=12)
    check_world_size(cfg, 47, DistEnv(0, 4, 0))
    with pytest.raises(TrainError, match="batch_size 12 does not split over 5 ranks"):
        check_world_size(cfg, 47, DistEnv(0, 5, 0))
    with pytest.raises(TrainError, match="3 training images cannot give 2 ranks 2 images each"):
        check_world_size(cfg, 3, DistEnv(0, 2, 0))


def test_sync_bn_on_cpu_ranks_is_refused_in_one_line_and_one_process_ignores_it():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert sync_batchnorm(model, torch.device("cpu")) is model
    with pytest.raises(ConfigError, match="SyncBatchNorm on CUDA only"):
        sync_batchnorm(model, torch.device("cpu"), DistEnv(0, 2, 0))


def test_amp_and_channels_last_are_cuda_only_unless_cpu_extras(tmp_path):
    cfg = tiny_config("target", tmp_path, tmp_path / "runs")  # base defaults: amp bf16, channels_last true
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (cfg.amp, cfg.channels_last, cfg.cpu_extras) == ("bf16", True, False)
    assert amp_dtype(cfg, cpu) is None and not uses_channels_last(cfg, cpu)  # every CPU run as before
    assert amp_dtype(cfg, cuda) == torch.bfloat16 and uses_channels_last(cfg, cuda)
    extras = cfg_with(cfg, cpu_extras=True)
    assert amp_dtype(extras, cpu) == torch.bfloat16 and uses_channels_last(extras, cpu)
    layout = cfg_with(cfg, cpu_extras="channels_last")  # the layout alone: float32
    assert amp_dtype(layout, cpu) is None and uses_channels_last(layout, cpu)
    assert not uses_channels_last(cfg_with(layout, channels_last=False), cpu)
    with pytest.raises(ConfigError, match="amp: fp16 on the CPU"):
        amp_dtype(cfg_with(extras, amp="fp16"), cpu)


def cpu_with_bf16_units(monkeypatch, amx: bool, avx512_bf16: bool | None = None) -> None:
    """This CPU as one with (or without) AMX tiles and AVX512-BF16, as torch's probes answer: one machine has only
    its own CPU: the probes change, the arithmetic stays this CPU's."""
    units = {"_is_amx_tile_supported": amx, "_is_avx512_bf16_supported": amx if avx512_bf16 is None else avx512_bf16}
    for probe, answer in units.items():
        monkeypatch.setattr(torch.cpu, probe, lambda answer=answer: answer, raising=False)


@pytest.mark.parametrize("amx, avx512_bf16", [(True, True), (False, True), (False, False)])
def test_cpu_extras_auto_is_bf16_where_the_cpu_has_amx_and_channels_last_elsewhere(tmp_path, monkeypatch, amx,
                                                                                     avx512_bf16):
    """`auto` trains in bf16 exactly where torch's probe finds AMX tiles: AVX512-BF16 alone trains bf16 no faster
    than float32 (BENCHMARKS.md), so such a CPU keeps float32, laid out channels-last (1.2x there)."""
    cfg = tiny_config("target", tmp_path, tmp_path / "runs", "cpu_extras=auto")
    assert cfg.cpu_extras == "auto"
    cpu_with_bf16_units(monkeypatch, amx, avx512_bf16)
    assert cpu_has_amx() is amx
    cpu = torch.device("cpu")
    assert cpu_extras_read(cfg) == (True if amx else "channels_last")
    assert amp_dtype(cfg, cpu) == (torch.bfloat16 if amx else None)
    assert uses_channels_last(cfg, cpu)
    assert amp_dtype(cfg, torch.device("cuda")) == torch.bfloat16  # CUDA: the amp key alone, as before


def test_a_resume_keeps_the_thread_count_and_what_auto_read_where_the_run_started(tmp_path, monkeypatch, capsys):
    cfg = tiny_config("target", tmp_path, tmp_path / "runs", "cpu_extras=auto", "threads=1")
    cpu, run = torch.device("cpu"), tmp_path / "run"
    cpu_with_bf16_units(monkeypatch, False)
    started_here = {"threads": 1, "cpu_extras": "channels_last"}
    assert as_started(cfg, started_here, run, cpu, True) == cfg  # as it started: as asked
    assert capsys.readouterr().err == ""
    kept = as_started(cfg, {"threads": 2, "cpu_extras": True}, run, cpu, True)
    assert (kept.threads, kept.cpu_extras) == (2, True)
    assert capsys.readouterr().err == (f"{run}: resuming with threads=2, cpu_extras=true, as it started (asked for "
                                       f"threads=1, cpu_extras=auto, channels_last on this CPU)\n")
    # a run started before `channels_last` (auto read false without AMX): float32 NCHW, as it started
    assert as_started(cfg, {"cpu_extras": False}, run, cpu, False).cpu_extras is False
    # set by hand, the config's value (the fingerprint compares it); CUDA does not read it; a resume state from
    # before the key: as asked
    assert as_started(cfg_with(cfg, cpu_extras=False), {"cpu_extras": True}, run, cpu, True).cpu_extras is False
    assert as_started(cfg, {"cpu_extras": True}, run, torch.device("cuda"), True) == cfg
    assert as_started(cfg, {}, run, cpu, True) == cfg


@pytest.mark.integration
def test_a_run_resumed_on_a_cpu_of_another_kind_keeps_the_dtype_it_started_in(tmp_path, monkeypatch, capsys):
    """`cpu_extras: auto` read true where the run started and false where it resumes: the resumed epoch trains in
    bf16 too, and the run ends with the weights of an uninterrupted one, not half in float32."""
    dataroot = make_recipe_root(tmp_path / "data", tags=False)
    sets = ("transfer_from=null", "epochs=2", "cpu_extras=auto", "amp=bf16", "channels_last=false")
    cfg = tiny_config("target", dataroot, tmp_path / "resumed", *sets)
    with monkeypatch.context() as started_on:
        cpu_with_bf16_units(started_on, True)
        whole = train(tiny_config("target", dataroot, tmp_path / "whole", *sets), "3fold0", "cpu", progress=False)
        interrupt_in_epoch_2(started_on, "mid-epoch")
        with pytest.raises(Interrupt):
            train(cfg, "3fold0", "cpu", progress=False)
    cpu_with_bf16_units(monkeypatch, False)
    seen = _record_forward(monkeypatch)
    capsys.readouterr()
    resumed = train(cfg, "3fold0", "cpu", resume=True, progress=False)
    assert ("resuming with cpu_extras=true, as it started (asked for cpu_extras=auto, channels_last on this CPU)"
            in capsys.readouterr().err)
    assert seen and {dtype for dtype, _ in seen} == {torch.bfloat16}
    weights = [read_checkpoint(rundir.checkpoint_path(run, 2))["model"] for run in (whole, resumed)]
    assert weights_gap(*weights) == 0.0
    assert rundir.read_run_config(resumed).cpu_extras is True  # the evaluator computes as it trained


# ---------------------------------------------------------------------------------------------------- CPU epochs

def _record_forward(monkeypatch):
    """What the model's first conv saw in each forward: (input dtype, channels-last layout)."""
    from fold0123.models.network import Network

    seen, forward = [], Network.forward

    def recording(self, x):
        first = next(m for m in self.modules() if isinstance(m, torch.nn.Conv2d))
        handle = first.register_forward_hook(
            lambda mod, args, out: seen.append((out.dtype, args[0].is_contiguous(memory_format=torch.channels_last))))
        try:
            return forward(self, x)
        finally:
            handle.remove()
    monkeypatch.setattr(Network, "forward", recording)
    return seen


@pytest.mark.parametrize("keys, expected", [(("amp=bf16", "channels_last=false"), (torch.bfloat16, False)),
                                            (("amp=none", "channels_last=true"), (torch.float32, True)),
                                            (("cpu_extras=channels_last",), (torch.float32, True)),
                                            (("cpu_extras=false",), (torch.float32, False))])
def test_one_cpu_epoch_with_bf16_autocast_or_channels_last(tmp_path, monkeypatch, keys, expected):
    dataroot = make_recipe_root(tmp_path / "data", tags=False)
    cfg = tiny_config("target", dataroot, tmp_path / "runs", "transfer_from=null", "epochs=1", "cpu_extras=true",
                      *keys)
    seen = _record_forward(monkeypatch)
    run = train(cfg, "3fold0", device="cpu", progress=False)
    assert rundir.done_path(run).is_file() and seen and set(seen) == {expected}
    weights = read_checkpoint(rundir.checkpoint_path(run, 1))["model"]
    assert all(v.dtype != torch.bfloat16 and torch.isfinite(v.float()).all() for v in weights.values())


# ---------------------------------------------------------------------------------------------------- 2 ranks

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    return {"base": base, "dataroot": make_recipe_root(base / "data", tags=False)}


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                           f"--master_port={free_port()}", "train.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def two_rank_run(ddp_root):
    """The equivalence run through the CLI on 2 gloo ranks (a real torchrun), and its output."""
    runs = ddp_root["base"] / "runs2"
    sets = [f"--set={key}" for key in (f"dataroot={ddp_root['dataroot']}", f"checkpoints_dir={runs}",
                                       *DDP_OVERRIDES)]
    done = torchrun("--conf", "parameters/tiny/target.yml", "--split", SPLIT, "--device", "cpu", "--no-progress",
                    *sets)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs, done


def weights_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


@pytest.mark.integration
def test_two_ranks_end_with_the_weights_of_one_process_on_the_same_global_batch(ddp_root, two_rank_run, tmp_path):
    runs, _ = two_rank_run
    one = train(tiny_config("target", ddp_root["dataroot"], tmp_path, *DDP_OVERRIDES), SPLIT, device="cpu",
                progress=False)
    two = runs / one.name
    for epoch in (1, 2):
        a, b = (read_checkpoint(rundir.checkpoint_path(run, epoch)) for run in (one, two))
        assert weights_gap(a["model"], b["model"]) < TOLERANCE
        assert weights_gap(a[EMA_KEY], b[EMA_KEY]) < TOLERANCE  # the EMA of the plain (unwrapped) model
    first = read_checkpoint(rundir.checkpoint_path(one, 1))["model"]
    assert weights_gap(first, read_checkpoint(rundir.checkpoint_path(one, 2))["model"]) > 50 * TOLERANCE
    # the logged loss is the global one: the same (rounded) values, step for step
    rows = [[line.split() for line in rundir.loss_log_path(run).read_text().splitlines()[1:]] for run in (one, two)]
    assert [r[:2] for r in rows[0]] == [r[:2] for r in rows[1]] and len(rows[0]) == 4
    assert [float(r[2]) for r in rows[0]] == pytest.approx([float(r[2]) for r in rows[1]], rel=1e-4)
    assert torch.load(rundir.resume_path(two), weights_only=True)["world_size"] == 2


@pytest.mark.integration
def test_torchrun_writes_the_run_directory_once_from_rank_0(ddp_root, two_rank_run):
    runs, done = two_rank_run
    run = runs / f"target_{SPLIT}"
    assert done.stdout.splitlines() == [str(run)]  # train.py prints the run once, not once per rank
    for epoch in (1, 2):
        assert done.stderr.count(f"{run.name}: epoch {epoch}/2 loss") == 1
    assert sorted(p.name for p in run.iterdir()) == ["1.pth", "2.pth", "DONE", "config.yml", "fingerprint.json",
                                                     "loss.log", "resume.pth", "tb", "train.lock"]
    lines = rundir.loss_log_path(run).read_text().splitlines()
    assert lines[0].startswith("epoch step") and [line.split()[1] for line in lines[1:]] == ["1", "2", "3", "4"]
    assert len(list(rundir.tb_dir(run).iterdir())) == 1  # one events file
    assert sorted(p.name for p in runs.iterdir()) == ["cache", run.name]
    assert not [p for p in runs.rglob("*") if ".tmp." in p.name]


def _rank(rank: int, world: int, port: int, cfg, split: str, fault: str | None, resume: bool) -> None:
    """One rank of a forked 2-rank run; `fault` on rank 1: `raise` at epoch 2's third micro-batch (after its first
    step, once rank 0's resume state of that step has landed: rank 0 saves it off its training thread, and a
    raise before that would have the launcher's SIGTERM cut the save, a race CI once hit), `kill` at its
    second."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if fault and rank == 1:
        from fold0123.models.task import Task

        calls, loss = [0], Task.loss

        def failing(self, outputs, targets):
            calls[0] += 1
            if calls[0] == (7 if fault == "raise" else 6):  # 4 micro-batches an epoch, 2 a step
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                saved = rundir.resume_path(rundir.run_dir(cfg, split))
                wait_until(lambda: saved.is_file() and torch.load(saved, weights_only=True)["global_step"] == 3,
                           timeout=120, interval=0.05, what=f"{saved} of step 3")
                raise RuntimeError("injected fault")
            return loss(self, outputs, targets)
        Task.loss = failing
    if fault == "kill" and rank == 0:
        # the launcher's SIGTERM landing at the worst moment: as rank 0 starts to write FAILED, before it could
        # ignore SIGTERM (a race CI once hit); it must still name the dead rank
        from fold0123.engine import distributed

        ignore = distributed._ignore_sigterm

        def terminated_first():
            distributed._ignore_sigterm = ignore
            distributed._catch_sigterm()  # as if the launcher's SIGTERM had not landed yet
            os.kill(os.getpid(), signal.SIGTERM)
            ignore()
        distributed._ignore_sigterm = terminated_first
    train(cfg, split, device="cpu", resume=resume, progress=False)


def two_ranks(cfg, fault: str | None = None, resume: bool = False) -> None:
    torch.multiprocessing.start_processes(_rank, (2, free_port(), cfg, SPLIT, fault, resume), nprocs=2,
                                          start_method="fork")


@pytest.mark.integration
def test_a_raising_rank_fails_the_run_naming_it_and_resume_ends_as_an_uninterrupted_run(ddp_root, two_rank_run,
                                                                                      tmp_path):
    # saved after every step: the resume continues part-way through epoch 2, each rank from its own draws
    cfg = tiny_config("target", ddp_root["dataroot"], tmp_path, *DDP_OVERRIDES, "save_every_steps=1")
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match="rank 1: injected fault"):
        two_ranks(cfg, fault="raise")
    run = rundir.run_dir(cfg, SPLIT)
    assert rundir.failed_path(run).read_text() == "RuntimeError: rank 1: injected fault\n"
    assert [e for e, _ in rundir.list_checkpoints(run)] == [1] and not rundir.done_path(run).exists()
    assert not [p for p in run.iterdir() if ".tmp." in p.name]
    state = torch.load(rundir.resume_path(run), weights_only=True)
    assert (state["global_step"], state["batch"], len(state["ranks"])) == (3, 2, 2)
    two_ranks(cfg, resume=True)
    assert rundir.done_path(run).is_file() and not rundir.failed_path(run).exists()
    # deterministic, same world size: the weights an uninterrupted 2-rank run ended with
    uninterrupted = read_checkpoint(rundir.checkpoint_path(two_rank_run[0] / run.name, 2))
    resumed = read_checkpoint(rundir.checkpoint_path(run, 2))
    assert weights_gap(uninterrupted["model"], resumed["model"]) == 0.0
    assert weights_gap(uninterrupted[EMA_KEY], resumed[EMA_KEY]) == 0.0


@pytest.mark.integration
def test_compressed_gradients_train_the_same_run_to_within_their_rounding(ddp_root, two_rank_run, tmp_path):
    cfg = tiny_config("target", ddp_root["dataroot"], tmp_path, *DDP_OVERRIDES, "grad_compression=bf16")
    two_ranks(cfg)
    run = rundir.run_dir(cfg, SPLIT)
    assert rundir.done_path(run).is_file()
    full = [read_checkpoint(rundir.checkpoint_path(two_rank_run[0] / run.name, e))["model"] for e in (1, 2)]
    bf16 = read_checkpoint(rundir.checkpoint_path(run, 2))["model"]

    def mean_gap(a, b):
        return float(torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a
                                if a[k].is_floating_point()]).mean())
    # the hook is on (same world size, same draws: without it the weights would be equal), and bf16's rounding of
    # the gradients moves the weights far less than the last epoch's two steps do
    ratio = mean_gap(full[1], bf16) / mean_gap(full[1], full[0])
    assert 0 < ratio < 0.25, ratio


@pytest.mark.integration
def test_a_killed_rank_fails_the_run_naming_it_and_one_process_resumes_it(ddp_root, tmp_path):
    cfg = tiny_config("target", ddp_root["dataroot"], tmp_path, *DDP_OVERRIDES)
    with pytest.raises(torch.multiprocessing.ProcessExitedException, match="SIGKILL"):
        two_ranks(cfg, fault="kill")
    run = rundir.run_dir(cfg, SPLIT)
    assert rundir.failed_path(run).read_text().startswith("RankDied: rank 1 died without an error")
    # another world size: the same batches in the same order (47 images, batch 12: nothing dropped either way)
    train(cfg, SPLIT, device="cpu", resume=True, progress=False)
    assert rundir.done_path(run).is_file() and not rundir.failed_path(run).exists()
    assert torch.load(rundir.resume_path(run), weights_only=True)["world_size"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine runs the check itself (make gpu-check)")
def test_the_gpu_check_refuses_a_machine_without_cuda_in_one_line():
    done = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PY": sys.executable})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "gpu_check: no CUDA device here: run it on a GPU machine\n"
