"""One run over several processes (ranks): the launch environment, the process group, and the few collectives the
trainer needs (DESIGN.md section 4: "the training loop, one process or DDP ranks").

Why it is shaped this way:
- The environment is read as timm's and open_clip's `distributed.py` read it: torchrun's `RANK`, `WORLD_SIZE` and
  `LOCAL_RANK`; else, when Slurm started several tasks (`SLURM_NTASKS` > 1) and nothing set `WORLD_SIZE`,
  `SLURM_PROCID`, `SLURM_NTASKS` and `SLURM_LOCALID`. The rendezvous is torch's `env://`: `MASTER_ADDR` and
  `MASTER_PORT` as torchrun sets them (a Slurm launch must export them itself). World size 1 is the plain
  one-process path: no process group is made, nothing below runs a collective.
- Backend NCCL on CUDA, gloo on the CPU; each rank trains on `cuda:LOCAL_RANK` (the launcher picks the GPUs with
  CUDA_VISIBLE_DEVICES) or on the CPU.
- Only rank 0 writes the run directory, so only it can write FAILED. A rank that fails tells it through the
  rendezvous store (the key `fold0123/{attempt}/failed/{rank}`, its error line) before it exits; rank 0, whose next
  collective then fails or whom torchrun sends SIGTERM (turned into `RankTerminated` here, so its `finally`
  blocks run and the last finished epoch's files land), reads the store and writes FAILED naming that rank. A rank
  killed outright (SIGKILL, the OOM killer) reports nothing: rank 0 then looks for the ranks' processes on its own
  host (their PIDs are in the store) and names the one that is gone. What this cannot do: name a dead rank on
  another node, or write anything when rank 0 itself is killed or stuck in a CUDA collective that never returns
  (NCCL); the launcher's pane then only has torchrun's exit status and log.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, TypeVar

import torch
import torch.distributed as dist

from fold0123.common.errors import Fold0123Error

T = TypeVar("T")

# store keys, per attempt (torchrun --max-restarts keeps its store across restarts)
_ATTEMPT = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
FAILED_KEY = f"fold0123/{_ATTEMPT}/failed/"
PID_KEY = f"fold0123/{_ATTEMPT}/pid/"
REPORT_WAIT_S = 3.0  # how long rank 0, its collective broken, waits for another rank's error report


class DistributedError(Fold0123Error):
    """A launch that cannot work (a rank variable that is not a number, no rendezvous address, --device cuda:N
    under torchrun), or a rank that cannot go on because another failed: one line naming the rank."""


class RankFailed(DistributedError):
    """Raised on the other ranks when rank 0 failed in a step the others wait for (preparing the run directory)."""


class RankDied(DistributedError):
    """Rank 0's name for a rank whose process is gone without an error report (killed by a signal)."""


class RankTerminated(BaseException):
    """SIGTERM under a multi-rank launch: torchrun (or mp.spawn) tearing this rank down because another failed.
    A BaseException, as KeyboardInterrupt, so that no `except Exception` on the way swallows it."""


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands in its launch: rank `rank` of `world_size`, `local_rank` on its node."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.world_size}"


SINGLE = DistEnv()


def _number(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name, "").strip()
    if not value and default is not None:
        return default
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name}={value!r} in the environment is not a number (a torchrun or Slurm launch "
                               f"sets it)") from None


def read_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The launch this process belongs to: torchrun's variables, else Slurm's when it started several tasks and
    nothing set WORLD_SIZE, else one process (SINGLE)."""
    environ = os.environ if environ is None else environ
    if environ.get("WORLD_SIZE", "").strip():
        world = _number(environ, "WORLD_SIZE")
        rank, local = _number(environ, "RANK", 0), _number(environ, "LOCAL_RANK", 0)
    elif _number(environ, "SLURM_NTASKS", 1) > 1:
        world = _number(environ, "SLURM_NTASKS")
        rank, local = _number(environ, "SLURM_PROCID", 0), _number(environ, "SLURM_LOCALID", 0)
    else:
        return SINGLE
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedError(f"rank {rank} of world size {world} (local rank {local}): not a rank of the launch")
    return DistEnv(rank, world, local) if world > 1 else SINGLE


# ---------------------------------------------------------------------------------------------------- the group

@contextlib.contextmanager
def process_group(env: DistEnv, device: torch.device) -> Iterator[None]:
    """The process group of a multi-rank launch for the block (nothing for one process). Inside it SIGTERM raises
    RankTerminated; an error leaving the block is reported to rank 0 (`report_failure`) and gets `rank N: ` in
    front of its message. The group is destroyed after a last barrier when the block succeeds (every rank leaves
    after rank 0 wrote DONE), left to the process's exit when it fails (a collective may be half done)."""
    if not env.distributed:
        yield
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise DistributedError(f"rank {env.rank} of {env.world_size}: {' and '.join(missing)} not set; torchrun "
                               f"sets them, a Slurm launch must export them (the first node's address, a free port)")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=env.rank, world_size=env.world_size)
    _register(env)
    previous = _catch_sigterm()
    try:
        yield
        dist.barrier()
    except BaseException as err:
        _ignore_sigterm()
        report_failure(env, err)
        name_rank(err, env.rank)
        raise
    else:
        dist.destroy_process_group()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _catch_sigterm():
    """SIGTERM -> RankTerminated in the main thread (once: a second SIGTERM during the clean-up is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RankTerminated("terminated (SIGTERM): the launcher tears the ranks down after another rank failed")
    return signal.signal(signal.SIGTERM, terminated)


def _ignore_sigterm() -> None:
    """Once a rank is failing, a SIGTERM must not cut its clean-up short (writing FAILED, reporting its error);
    the launcher's SIGKILL still ends it after its grace period (torchrun, mp.spawn: 30 s)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # noqa: BLE001 (private API: without it, failures are reported without the rank's error)
        return None


def _register(env: DistEnv) -> None:
    """This rank's host and PID in the store, so rank 0 can tell which rank's process is gone."""
    store = _store()
    if store is not None:
        store.set(f"{PID_KEY}{env.rank}", f"{socket.gethostname()} {os.getpid()}")


def name_rank(err: BaseException, rank: int) -> None:
    """Put `rank N: ` in front of the error's message (its one line, printed by the CLI), in place."""
    prefix = f"rank {rank}: "
    if len(err.args) == 1 and isinstance(err.args[0], str):
        if not err.args[0].startswith(prefix):
            err.args = (prefix + err.args[0],)
    elif hasattr(err, "add_note"):
        err.add_note(f"(on rank {rank})")


def error_line(err: BaseException) -> str:
    """`Type: message` on one line (FAILED's format)."""
    return f"{type(err).__name__}: {' '.join(str(err).split()) or type(err).__name__}"


def is_consequence(err: BaseException) -> bool:
    """An error a rank gets because another rank failed (its collective broke, it was torn down, rank 0 told it)."""
    if isinstance(err, (RankTerminated, RankFailed)):
        return True
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(
        clue in text for clue in ("gloo", "nccl", "connection closed", "connection reset", "broken pipe",
                                  "peer", "process group"))


def report_failure(env: DistEnv, err: BaseException) -> None:
    """Leave this rank's error line in the store for rank 0 (a rank's own errors only: not the consequences of
    another's)."""
    if env.is_main or is_consequence(err):
        return
    store = _store()
    if store is None:
        return
    try:
        store.set(f"{FAILED_KEY}{env.rank}", error_line(err))
    except Exception:  # noqa: BLE001 (the store may be gone with rank 0; the error itself matters more)
        pass


def failure_line(env: DistEnv, err: BaseException, wait: float = REPORT_WAIT_S) -> str:
    """FAILED's line for `err`, raised on rank 0: `Type: message` for one process; under a multi-rank launch the
    rank that failed, named: rank 0's own error, or (when rank 0's error is a consequence) the error another rank
    reported, else the rank whose process is gone."""
    if not env.distributed:
        return error_line(err)
    _ignore_sigterm()
    if not is_consequence(err):
        return f"{type(err).__name__}: rank {env.rank}: {' '.join(str(err).split())}"
    store, deadline, dead = _store(), time.monotonic() + wait, []
    while store is not None:
        try:
            for rank in range(env.world_size):
                key = f"{FAILED_KEY}{rank}"
                if rank != env.rank and store.check([key]):
                    kind, _, message = store.get(key).decode(errors="replace").partition(": ")
                    return f"{kind}: rank {rank}: {message}"
            # a rank reports before it exits: one that is gone without a report was killed
            dead = _dead_ranks(env, store)
        except Exception:  # noqa: BLE001 (the store itself went away)
            break
        if dead or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    seen = " ".join(str(err).split())
    if dead:
        return (f"{RankDied.__name__}: rank {dead[0]} died without an error (killed by a signal: out of memory?); "
                f"rank 0 saw: {seen[:200]}")
    return f"{type(err).__name__}: rank {env.rank}: {seen} (no other rank reported an error)"


def _dead_ranks(env: DistEnv, store) -> list[int]:
    """Ranks on this host whose process is gone (or a zombie)."""
    if store is None:
        return []
    host, dead = socket.gethostname(), []
    for rank in range(env.world_size):
        where = store.get(f"{PID_KEY}{rank}").decode() if store.check([f"{PID_KEY}{rank}"]) else ""
        name, _, pid = where.rpartition(" ")
        if rank != env.rank and name == host and pid.isdigit() and not _alive(int(pid)):
            dead.append(rank)
    return dead


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return stat.read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------- collectives

def _broadcast(value):
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_main(env: DistEnv, make: Callable[[], T]) -> T:
    """`make()` run on rank 0 alone, its result (a small picklable value) on every rank. An error there is raised
    on rank 0 and, as RankFailed naming it, on the others, which would otherwise wait for it forever."""
    if not env.distributed:
        return make()
    if env.is_main:
        try:
            value = make()
        except BaseException as err:
            _broadcast(("error", error_line(err)))
            raise
        return _broadcast(("ok", value))[1]
    status, value = _broadcast(None)
    if status == "error":
        raise RankFailed(f"rank 0 failed: {value}")
    return value


@contextlib.contextmanager
def main_first(env: DistEnv) -> Iterator[None]:
    """The block on rank 0 first, then on the others (what rank 0 builds once, such as the image cache, the others
    then only open); an error on rank 0 reaches the others as RankFailed."""
    if not env.distributed:
        yield
        return
    if env.is_main:
        try:
            yield
        except BaseException as err:
            _broadcast(("error", error_line(err)))
            raise
        _broadcast(("ok", None))
        return
    status, line = _broadcast(None)
    if status == "error":
        raise RankFailed(f"rank 0 failed: {line}")
    yield


def gather_objects(env: DistEnv, obj: T) -> list[T]:
    """Every rank's `obj`, in rank order, on every rank (pickled through the backend: small objects only)."""
    if not env.distributed:
        return [obj]
    out: list = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def sum_over_ranks(env: DistEnv, values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the ranks (float64; one all_reduce); the values as they are for one process."""
    if not env.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def rank_part(n: int, env: DistEnv) -> slice:
    """This rank's contiguous share of `n` items (sizes differ by at most one, rank order)."""
    return slice(n * env.rank // env.world_size, n * (env.rank + 1) // env.world_size)
