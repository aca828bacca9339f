"""One run per job: a training that spans processes and machines (design.md §9).

A launcher starts one process per device and tells each who it is through the environment:
``torchrun`` and ``accelerate launch`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; PyTorch's "torchrun"
documentation), Keras' ``MultiWorkerMirroredStrategy`` (``TF_CONFIG``: the cluster and this
task). ``world()`` reads it; nothing here imports a framework until a job has several
processes.

Who does what:

- **Global rank 0** (the chief for Keras) owns the job's one MLflow run. The other ranks get a
  ``mltrack.tracking.follower.Follower``: the same verbs, writing nothing anywhere.
- **The run id** reaches every rank (``join``): rank 0 creates the run, then all ranks gather
  each one's node and hardware over the process group, rank 0's message carrying the id.
- **Each epoch** (``merge_epoch``) rank 0 gathers every rank's ledger record and logs the
  job's: global ``samples_per_s`` = all ranks' samples / the slowest rank's ``train_wall_s``
  (never rank 0's × world size, which hides a straggler), the slowest and fastest ranks'
  times and their ratio, the CPU of all ranks, MFU against the sum of the devices' peaks.
  Collectives run at the epoch's end only: no host synchronisation inside a step.
- **Decisions** are taken together: a non-finite loss on any rank stops every rank at the
  same optimizer step (``first_divergence``, an all-reduce of the earliest bad micro-step);
  a stop decided on rank 0 (a sweep's pruner) reaches the others (``decided_on_rank_zero``).
- **A rank that fails** leaves its error in the launcher's key-value store (``report_failure``)
  before it exits; rank 0, whose next collective then fails (or whom the launcher then sends
  SIGTERM), ends the run FAILED naming that rank (``peer_failure``).

Control messages go over a gloo group (the default group when it is gloo; a new one beside an
nccl default), so objects never travel through device memory.

**At exit** a process whose groups are all gloo destroys them (``destroy_gloo_at_exit``), as
PyTorch's "Shutdown" documentation asks of every trainer process: left to the interpreter's
finalization, gloo's worker threads abort it ("terminate called without an active
exception", SIGABRT; pytorch/pytorch#190489), which failed a Trainer job under ``torchrun``
whose script, like most, never calls ``destroy_process_group``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FAILURE_KEY = "mltrack/failure"
_CONTROL: list[Any] = []  # the gloo group for control messages, once made
_AT_EXIT: list[bool] = []  # destroy_gloo_at_exit registered


@dataclass(frozen=True)
class World:
    """This process's place in its job; a lone process is rank 0 of a world of 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    node_rank: int = 0
    launcher: str = ""  # torchrun, accelerate, tf_config, env ("" for one process)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    @property
    def torch(self) -> bool:
        """A PyTorch job (a process group can be formed), not a Keras multi-worker one."""
        return self.distributed and self.launcher != "tf_config"


def _launcher(env: Mapping[str, str]) -> str:
    if "ACCELERATE_DYNAMO_BACKEND" in env:  # set by every `accelerate launch` path
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in env:
        return "torchrun"
    return "env"


def _tf_config_world(text: str) -> World:
    """Keras' multi-worker layout: the chief (or worker 0 without one) is rank 0."""
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster", {}), config.get("task", {})
        chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"TF_CONFIG: got {text[:80]!r}, expected Keras' cluster JSON") from exc
    if kind == "chief":
        rank = index
    elif kind == "worker":
        rank = chiefs + index
    else:  # a parameter server or evaluator trains no replica and owns no run
        rank = chiefs + workers + index
    return World(rank, chiefs + workers, rank, chiefs + workers, 0, "tf_config")


def world(env: Mapping[str, str] | None = None) -> World:
    """This process's ``World``, from the launcher's environment variables.

    ``ValueError`` for variables a launcher would not set (a rank outside the world).
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env and "RANK" in env:
        try:
            size, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
            local_rank = int(env.get("LOCAL_RANK", rank))
            local_size = int(env.get("LOCAL_WORLD_SIZE", size))
            node = int(env.get("GROUP_RANK", rank // max(local_size, 1)))
        except ValueError as exc:
            raise ValueError(f"RANK/WORLD_SIZE: {exc}, expected integers") from exc
        if not 0 <= rank < size:
            raise ValueError(f"RANK: got {rank}, expected 0..{size - 1} (WORLD_SIZE {size})")
        return World(rank, size, local_rank, local_size, node, _launcher(env) if size > 1 else "")
    if env.get("TF_CONFIG"):
        found = _tf_config_world(env["TF_CONFIG"])
        return found if found.distributed else World()
    return World()


def default_backend() -> str:
    """nccl with CUDA, else gloo (PyTorch's recommendation for GPU and CPU training)."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def device(here: World | None = None) -> Any:
    """The rank's device: ``cuda:LOCAL_RANK`` with CUDA, else the CPU."""
    import torch

    here = here or world()
    if torch.cuda.is_available():
        return torch.device("cuda", here.local_rank)
    return torch.device("cpu")


def process_group() -> Any:
    """Join the job's default process group (``env://``) if nobody has yet; return the gloo
    group for control messages (``None``: the default group is gloo)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(world().local_rank)
        dist.init_process_group(backend=default_backend())
    if not _AT_EXIT:
        atexit.register(destroy_gloo_at_exit)
        _AT_EXIT.append(True)
    if dist.get_backend() == "gloo":
        return None
    if not _CONTROL:
        _CONTROL.append(dist.new_group(backend="gloo"))
    return _CONTROL[0]


def destroy_gloo_at_exit() -> None:
    """At the interpreter's exit (``atexit``, before finalization), destroy the process
    groups if every backend in them is gloo; nothing if the script destroyed them itself.

    Destroying a gloo group is local to the process; an nccl group's destruction can wait on
    peers still in a collective (a rank that failed), so groups with nccl are left to the
    script, where PyTorch only warns."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    # "gloo", "cpu:gloo" or, for a group per device type, "cpu:gloo, cuda:nccl".
    if all(b.rsplit(":", 1)[-1].strip() == "gloo" for b in _backend().split(",")):
        with contextlib.suppress(Exception):  # exiting: nothing left to report it to
            dist.destroy_process_group()


def gather(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), on every rank, in rank order."""
    import torch.distributed as dist

    group = process_group()
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value, group=group)
    return out


def node_info(here: World) -> dict[str, Any]:
    """What rank 0 records of each rank's node: its host, node rank and hardware."""
    from mltrack.measure.environment import detect_hardware

    hardware = detect_hardware()
    return {
        "host": socket.gethostname(),
        "node_rank": here.node_rank,
        "local_size": here.local_size,
        "hardware": hardware.label,
        "fingerprint": hardware.fingerprint,
    }


def join(run_id: str, first_epoch: int = 0) -> tuple[str, dict[str, Any], int]:
    """Called by every rank once per run, rank 0 with the id of the run it created (and the
    epoch a resumed run goes on from), the others with "": returns that id, for rank 0 the
    job's params and tags, and the first epoch, so every rank trains the same epochs."""
    here = world()
    if not here.torch:  # Keras' workers: only the chief writes; the others need no id
        fields = _job_fields(here, [node_info(here)] * here.size) if run_id else {}
        return run_id, fields, first_epoch
    infos = gather({**node_info(here), "run_id": run_id, "first_epoch": first_epoch})
    fields = _job_fields(here, infos) if here.is_rank_zero else {}
    return str(infos[0]["run_id"]), fields, int(infos[0]["first_epoch"])


def _job_fields(here: World, infos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    # A node: a host, or a launcher's node rank on it (two launchers on one host are two).
    nodes: dict[tuple[int, str], Mapping[str, Any]] = {}
    for info in infos:
        nodes.setdefault((int(info["node_rank"]), str(info["host"])), info)
    labels = sorted({str(n["hardware"]) for n in nodes.values()})
    params = {
        "world_size": here.size,
        "nodes": len(nodes),
        "processes_per_node": here.local_size,
        "distributed.backend": "tf_config" if not here.torch else _backend(),
        "distributed.launcher": here.launcher,
    }
    tags = {
        "distributed.world_size": str(here.size),
        "distributed.hardware": f"{here.size} x " + " + ".join(labels),
    }
    for number, (_, node) in enumerate(sorted(nodes.items())):
        tags[f"distributed.node{number}"] = (
            f"{node['host']}: {node['local_size']} x {node['hardware']} ({node['fingerprint']})"
        )
    return {"params": params, "tags": tags}


def _backend() -> str:
    """gloo, nccl, ...; a group made per device type (accelerate's) says "cpu:gloo"."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return default_backend()
    name = str(dist.get_backend())
    return str(dist.get_backend_config()) if name == "undefined" else name


def first_divergence(bad: int | None) -> int | None:
    """The earliest micro-step any rank saw a non-finite loss at (None: none did); every rank
    calls it at the same point, and all get the same answer."""
    import torch
    import torch.distributed as dist

    never = torch.iinfo(torch.long).max
    flag = torch.tensor([never if bad is None else bad], dtype=torch.long)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=process_group())
    step = int(flag.item())
    return None if step == never else step


def decided_on_rank_zero(decision: bool) -> bool:
    """Rank 0's ``decision`` (a stop), on every rank."""
    import torch.distributed as dist

    box = [decision]
    dist.broadcast_object_list(box, src=0, group=process_group())
    return bool(box[0])


def merge_epoch(record: dict[str, float], samples: int, ledger: Any) -> dict[str, float]:
    """The job's epoch record from every rank's (called by all ranks; rank 0's return is what
    the run logs, the others get their own back).

    ``samples_per_s`` = the samples all ranks trained / the longest ``train_wall_s``. Each
    rank's own work is its ``train_wall_s`` less ``comm_wait_s`` (waiting in the gradient
    all-reduce); ``slowest_rank_s`` and ``fastest_rank_s`` are the longest and shortest,
    ``rank_time_ratio`` their ratio (1.0 when balanced), ``slowest_rank`` names the
    straggler, whose ``data_wait_s``, ``compute_s`` and ``comm_wait_s`` the record carries.
    CPU seconds are summed over ranks; ``achieved_tflops`` and ``mfu`` are against ``peak``
    summed over the job's devices (a CPU node's peak counts once: its ranks share its cores),
    from rank 0's ``ledger`` (a ``mltrack.measure.ledger.Ledger``), as is ``mfu_bound``.
    """
    from mltrack.measure.efficiency import per_epoch

    here = world()
    mine = {**record, "samples": float(samples), "node_rank": float(here.node_rank)}
    ranks = gather(mine)
    if not here.is_rank_zero:
        return record
    wall = max(r["train_wall_s"] for r in ranks)
    # A rank's own work: its training time less the time it waited for the others in the
    # gradient all-reduce (mltrack.torch.ddp.CommunicationTimer), which evens the walls out.
    own = [r["train_wall_s"] - r.get("comm_wait_s", 0.0) for r in ranks]
    slowest = max(range(len(own)), key=own.__getitem__)
    total = sum(r["samples"] for r in ranks)
    job = dict(record)
    job["train_wall_s"] = wall
    job["slowest_rank_s"], job["fastest_rank_s"] = own[slowest], min(own)
    job["rank_time_ratio"] = own[slowest] / min(own) if min(own) > 0 else float("inf")
    job["slowest_rank"] = float(slowest)
    job["samples_per_s"] = total / wall if wall > 0 else 0.0
    for key in ("data_wait_s", "compute_s", "comm_wait_s"):
        if key in record:
            job[key] = ranks[slowest].get(key, record[key])
    for key in ("loss", "accuracy"):  # running training means: weighted by samples
        if key in record and total:
            job[key] = sum(r.get(key, record[key]) * r["samples"] for r in ranks) / total
    for key in ("epoch_user_cpu_s", "epoch_system_cpu_s"):
        job[key] = sum(r.get(key, 0.0) for r in ranks)
    job["peak_rss_mb"] = max(r.get("peak_rss_mb", 0.0) for r in ranks)
    if ledger.peak_tflops is not None:
        import torch

        devices = len(ranks) if torch.cuda.is_available() else len({r["node_rank"] for r in ranks})
        bound = ledger.bound_tflops * devices if ledger.bound_tflops else None
        job.update(
            per_epoch(
                ledger.flops_per_sample, job["samples_per_s"], ledger.peak_tflops * devices, bound
            )
        )
    return job


def _store() -> Any:
    """A client of the launcher's key-value store (torchrun's agent, or rank 0's for env://)."""
    from datetime import timedelta

    import torch.distributed as dist

    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    return dist.TCPStore(host, port, is_master=False, timeout=timedelta(seconds=10))


def _store_key() -> str:
    # A restarted job (torchrun --max-restarts) must not read the previous attempt's failure.
    return f"{FAILURE_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def report_failure(error: str) -> None:
    """A rank other than 0 failed with ``error``: leave it where rank 0 will look."""
    here = world()
    if not here.torch or here.is_rank_zero:
        return
    try:
        message = f"rank {here.rank} ({socket.gethostname()}, pid {os.getpid()}): {error}"
        _store().compare_set(_store_key(), "", message[:500])  # the first failure stands
    except Exception:  # the launcher names the rank anyway: never mask the rank's own error
        pass


# What a collective raises when a peer's process is gone (gloo's TCP transport; NCCL's watchdog).
PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "NCCL communicator was aborted",
)


def peer_failure(exc: BaseException) -> str:
    """Why another rank ended the job, when one did: what it reported before failing, or, when
    ``exc`` (rank 0's) says a peer's process is gone without a word (killed, out of memory),
    that. "" when ``exc`` is rank 0's own failure."""
    here = world()
    if not here.torch:
        return ""
    try:
        store, key = _store(), _store_key()
        if store.check([key]):
            return str(store.get(key).decode())
    except Exception:  # the store went with the launcher: judge by the exception alone
        pass
    gone = next((text for text in PEER_GONE if text in str(exc)), "")
    if gone:
        return f"another rank's process died without an error ({gone}): see the launcher's log"
    return ""
