"""Data parallelism for ``mltrack.torch.fit`` under a launcher (``torchrun``, ``accelerate
launch``, or anything that sets ``RANK``/``WORLD_SIZE``): PyTorch's own parts, as its
"Getting Started with Distributed Data Parallel" tutorial puts them together.

- ``wrap``: ``DistributedDataParallel`` on the rank's device (nccl on CUDA, gloo on a CPU).
- ``shard_training``: the training loader rebuilt on a ``DistributedSampler`` (shuffled when
  the loader shuffled, seeded alike on every rank; the loop calls ``set_epoch`` each epoch),
  so the ranks see disjoint parts of each epoch and the same number of batches.
- ``evaluate``: each rank evaluates every ``world_size``-th sample from its rank on
  (``Strided``: no padding, unlike ``DistributedSampler``, which repeats samples to even the
  shards); the logits are gathered and put back in the dataset's order, so the scores are
  those one process evaluating the same weights computes (the same batch-averaged F1 too).

What is not changed: a loader that already has a ``DistributedSampler`` (the caller's own
sharding) is kept as it is, with ``set_epoch`` called each epoch.
"""

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

from mltrack.tracking import distributed


class Strided(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a dataset of ``n``: an unpadded shard."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def _rebuilt(loader: Any, sampler: Sampler[int]) -> DataLoader[Any]:
    """``loader`` with another sampler; everything else as the caller made it."""
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers if workers else False,
    )


def shard_training(loader: Any) -> Any:
    """The training loader on a ``DistributedSampler`` for this rank (see the module doc)."""
    if isinstance(loader.sampler, DistributedSampler) or loader.batch_size is None:
        return loader
    here = distributed.world()
    # Every rank must shuffle alike: the generator's seed is the caller's (the same on all
    # ranks, as the experiments seed it), 0 (DistributedSampler's default) without one.
    seed = loader.generator.initial_seed() if loader.generator is not None else 0
    sampler: DistributedSampler[Any] = DistributedSampler(
        loader.dataset,
        num_replicas=here.size,
        rank=here.rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        seed=seed,
        drop_last=loader.drop_last,
    )
    return _rebuilt(loader, sampler)


def set_epoch(loader: Any, epoch: int) -> None:
    """Reshuffle a ``DistributedSampler`` for ``epoch`` (every rank, every epoch)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` on ``device`` (already prepared there)."""
    from torch.nn.parallel import DistributedDataParallel

    distributed.process_group()
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)


class CommunicationTimer:
    """Seconds this rank's gradient all-reduces were in flight, launch to completion, with
    overlapping buckets counted once: a DDP communication hook over PyTorch's own
    ``allreduce_hook`` (its docstring invites wrapping it "to log useful information").

    Under synchronous DDP every rank's epoch lasts as long as the slowest rank's, since the
    others wait for it inside the all-reduce; ``train_wall_s`` minus this is the rank's own
    work, which shows the straggler. Timed on the host: on a CPU (gloo) the collective is
    done when its future completes; on CUDA (nccl) it is not installed.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._until = 0.0
        self._lock = threading.Lock()

    # Real annotations (no ``from __future__ import annotations`` in this module): DDP checks
    # that a hook's bucket parameter is annotated as dist.GradBucket, if at all.
    def hook(self, group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        started = time.perf_counter()

        def done(future: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
            ended = time.perf_counter()
            with self._lock:
                self.seconds += max(0.0, ended - max(started, self._until))
                self._until = max(self._until, ended)
            return future.value()

        return default_hooks.allreduce_hook(group, bucket).then(done)

    def take(self) -> float:
        """The seconds since the last ``take``."""
        with self._lock:
            seconds, self.seconds = self.seconds, 0.0
        return seconds


def time_communication(model: nn.Module, device: torch.device) -> CommunicationTimer | None:
    """A ``CommunicationTimer`` on a DDP ``model`` on the CPU (None on CUDA)."""
    if device.type == "cuda":
        return None
    timer = CommunicationTimer()
    model.register_comm_hook(None, timer.hook)
    return timer


def unwrapped(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (for evaluation and export)."""
    return model.module if hasattr(model, "no_sync") and hasattr(model, "module") else model


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) to every rank, as DDP itself does at
    the start of each training forward: after an epoch's last step each rank still holds the
    statistics of its own last batch, and evaluation and export need the same model on all."""
    for buffer in unwrapped(model).buffers():
        dist.broadcast(buffer.data, src=0)


def weights_checksum(model: nn.Module) -> str:
    """A SHA-1 of the model's state (names and bytes of every parameter and buffer)."""
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in sorted(unwrapped(model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def weights_agree(model: nn.Module) -> dict[str, str]:
    """Every rank's ``weights_checksum`` after training, as tags for rank 0 to log:
    ``distributed.weights_identical`` is "false" when the replicas drifted apart (a
    gradient that missed the all-reduce, a rank-local random layer)."""
    sums = distributed.gather(weights_checksum(model))
    return {
        "distributed.weights_identical": str(len(set(sums)) == 1).lower(),
        "distributed.weights_sha1": ", ".join(f"rank {r}: {s[:12]}" for r, s in enumerate(sums)),
    }


def evaluate(
    evaluate_one: Callable[[nn.Module, Any], tuple[np.ndarray, np.ndarray, float]],
    model: nn.Module,
    loader: Any,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The whole evaluation set's logits (N × classes), labels (N) and summed loss, each rank
    evaluating its ``Strided`` shard with ``evaluate_one(model, shard_loader)``."""
    here = distributed.world()
    n = len(loader.dataset)
    shard = _rebuilt(loader, Strided(n, here.rank, here.size))
    logits, labels, loss_sum = evaluate_one(unwrapped(model), shard)
    parts = distributed.gather((logits, labels, loss_sum))
    ordered_logits = np.empty((n, *parts[0][0].shape[1:]), dtype=np.float32)
    ordered_labels = np.empty(n, dtype=parts[0][1].dtype)
    for rank, (part_logits, part_labels, _) in enumerate(parts):
        if not len(part_labels):  # a shard of nothing: a set smaller than the world
            continue
        ordered_logits[rank :: here.size] = part_logits
        ordered_labels[rank :: here.size] = part_labels
    return ordered_logits, ordered_labels, float(sum(part[2] for part in parts))
