"""The PyTorch loop: accumulation equals the big batch, precisions, divergence, real store."""

from __future__ import annotations

import copy
import io
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mltrack import torch as mt
from mltrack.measure.metrics import classification_scores
from mltrack.torch import steps
from mltrack.torch.batches import window_weights
from mltrack.tracking.run import start_run
from tests.conftest import all_runs, check_timing_model

pytestmark = pytest.mark.torch


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def dataset(n: int = 10) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))


def test_window_weights_cover_short_batches_and_partial_windows():
    # 10 samples, micro-batch 3, k=2: micro-batches [3, 3, 3, 1], windows [3, 3] and [3, 1].
    assert window_weights([3, 3, 3, 1], 2) == [0.5, 0.5, 0.75, 0.25]
    assert window_weights([4, 4, 4], 2) == [0.5, 0.5, 1.0]


@pytest.mark.parametrize(("batch", "k"), [(3, 2), (2, 4), (5, 1)])
def test_k_micro_batches_give_the_update_of_one_batch_of_k_times_b(store, batch, k):
    """Tolerance 1e-6 (fp32 sums in a different order); covers the last partial window."""
    data = dataset(10)
    accumulated, reference = mlp(), mlp()
    opt = torch.optim.SGD(accumulated.parameters(), lr=0.5)
    loader = DataLoader(data, batch_size=batch, shuffle=False)
    with start_run("acc", tracking_uri=store) as run:
        mt.fit(
            run,
            accumulated,
            opt,
            loader,
            loader,
            epochs=1,
            settings=mt.Settings(accumulation_steps=k),
        )
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    for start in range(0, 10, batch * k):  # one optimizer step per window of k·b samples
        x, y = (
            data.tensors[0][start : start + batch * k],
            data.tensors[1][start : start + batch * k],
        )
        ref_opt.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        ref_opt.step()
    for a, b in zip(accumulated.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_steps_and_effective_batch_are_logged(store, client):
    loader = DataLoader(dataset(10), batch_size=3)
    model = mlp()
    with start_run("acc", tracking_uri=store) as run:
        mt.fit(
            run,
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loader,
            loader,
            epochs=2,
            settings=mt.Settings(accumulation_steps=2),
        )
    [r] = all_runs(client, "acc")
    history = {
        k: [m.value for m in client.get_metric_history(r.info.run_id, k)]
        for k in ("micro_steps", "optimizer_steps", "data_wait_s", "val_f1_macro")
    }
    assert history["micro_steps"] == [4, 8] and history["optimizer_steps"] == [2, 4]
    assert len(history["data_wait_s"]) == len(history["val_f1_macro"]) == 2


def test_bf16_autocast_runs_on_this_cpu(store, client):
    loader = DataLoader(dataset(32), batch_size=8)
    model = mlp()
    with start_run("p", tracking_uri=store) as run:
        mt.fit(
            run,
            model,
            torch.optim.Adam(model.parameters()),
            loader,
            loader,
            epochs=1,
            settings=mt.Settings(precision="mixed_bf16", device="cpu"),
        )
    [r] = all_runs(client, "p")
    assert r.data.tags["torch.precision_run"] == "mixed_bf16"
    assert next(model.parameters()).dtype == torch.float32  # variables stay fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(2, 6)).dtype == torch.bfloat16


class AutocastProbe(nn.Module):
    """Records the autocast state its forward pass runs under, inside the training loop."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = mlp()
        self.seen: set[tuple[bool, torch.dtype]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.inner(x)


def test_mixed_fp16_on_cpu_runs_fp16_autocast_with_a_grad_scaler(store, client):
    loader = DataLoader(dataset(8), batch_size=4)
    model = AutocastProbe()
    with start_run("p", tracking_uri=store) as run:
        mt.fit(
            run,
            model,
            torch.optim.Adam(model.parameters()),
            loader,
            loader,
            epochs=2,
            settings=mt.Settings(precision="mixed_fp16", device="cpu"),
        )
    assert (True, torch.float16) in model.seen  # what was asked is what ran
    assert next(model.parameters()).dtype == torch.float32  # variables stay fp32
    [r] = all_runs(client, "p")
    assert r.data.tags["torch.precision_run"] == "mixed_fp16"
    scales = client.get_metric_history(r.info.run_id, "loss_scale")
    assert len(scales) == 2 and all(m.value > 0 for m in scales)
    assert len(client.get_metric_history(r.info.run_id, "skipped_steps")) == 2


def test_one_timing_model_validation_timed_apart(store, client):
    data = dataset(2048)
    loader = DataLoader(data, batch_size=64)
    model = mlp()
    with start_run("t", tracking_uri=store) as run:
        optimizer = torch.optim.Adam(model.parameters())
        settings = mt.Settings(device="cpu")
        mt.fit(run, model, optimizer, loader, loader, epochs=2, settings=settings)
    start = time.perf_counter()
    mt.evaluate(model, loader, torch.nn.CrossEntropyLoss(), settings, "fp32")
    check_timing_model(client, run.run_id, len(data), time.perf_counter() - start)


def test_pure_bf16_casts_the_model():
    model = mt.prepare(mlp(), mt.Settings(device="cpu"), "bf16")
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("check_every", [1, 50])
def test_nan_loss_is_diverged_with_the_micro_step(store, client, check_every):
    """The flag lives on the device and is read every ``check_every`` optimizer steps: the
    exact micro-step is reported either way; read every step, no non-finite step is applied."""
    data = dataset(12)
    data.tensors[0][7] = float("nan")  # micro-batch 3 (batch 2) holds it
    loader = DataLoader(data, batch_size=2)
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    with start_run("d", tracking_uri=store) as run:
        mt.fit(
            run,
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            loader,
            loader,
            epochs=3,
            settings=mt.Settings(accumulation_steps=2, check_every=check_every),
        )
    [r] = all_runs(client, "d")
    assert (r.info.status, r.data.tags["outcome"]) == ("FAILED", "diverged")
    assert r.data.tags["diverged_step"] == "3" and r.data.tags["diverged_epoch"] == "0"
    assert len(client.get_metric_history(r.info.run_id, "loss")) == 1  # stopped in epoch 0
    assert not torch.equal(before["0.weight"], model.state_dict()["0.weight"])
    if check_every == 1:  # the first window stepped; the poisoned window did not
        assert torch.isfinite(model.state_dict()["0.weight"]).all()


def test_the_loop_reads_no_loss_on_the_host_per_step(store, monkeypatch):
    """Issue 21: one host read of the loss per optimizer step is a device synchronisation per
    step on a GPU. Count the tensor-to-Python reads a training epoch makes."""
    reads = {"n": 0}
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    train = DataLoader(dataset(160), batch_size=2)  # 80 optimizer steps an epoch
    val = DataLoader(dataset(4), batch_size=4)  # one validation batch
    model = mlp()
    with start_run("reads", tracking_uri=store) as run:
        reads["n"] = 0
        mt.fit(
            run,
            model,
            torch.optim.SGD(model.parameters(), lr=0.01),
            train,
            val,
            epochs=2,
            settings=mt.Settings(),
        )
        # Per epoch: the divergence flag once (step 50) and at the end, the sums once, and the
        # validation batch's loss, outputs and labels: about 10 reads for 160 steps.
        assert reads["n"] <= 20, reads


@pytest.mark.parametrize("k", [1, 3])
def test_gradients_are_dropped_at_a_windows_first_backward_not_after_its_step(store, k):
    """Issue 21: gradients dropped right after the optimizer step went back to the operating
    system and were faulted in again for the next window (ResNet50: 60% more page faults
    per epoch than a plain loop). Each forward after the first still sees the last window's
    (or micro-batch's) gradients, as in a plain loop that zeroes them before ``backward``."""
    model = mlp()
    default = steps.default_forward(nn.CrossEntropyLoss(), "fp32", torch.device("cpu"))
    seen = []

    def forward(model, x, y):
        seen.append(all(p.grad is not None for p in model.parameters()))
        return default(model, x, y)

    with start_run("grads", tracking_uri=store) as run:
        mt.fit(
            run,
            model,
            torch.optim.SGD(model.parameters(), lr=0.01),
            DataLoader(dataset(24), batch_size=2),  # 12 micro-batches an epoch
            DataLoader(dataset(4), batch_size=4),
            epochs=2,
            settings=mt.Settings(accumulation_steps=k),
            forward=forward,
        )
    assert seen == [False] + [True] * 23


def test_image_input_normalises_uint8_in_the_model_dtype():
    layer = mt.ImageInput((0.5,), (0.25,), input_size=4, model_size=8).to(torch.bfloat16)
    out = layer(torch.full((1, 1, 4, 4), 255, dtype=torch.uint8))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 1, 8, 8)
    assert float(out.float().mean()) == pytest.approx(2.0)


def test_flop_counter_mode_is_within_5_percent_of_the_hand_count():
    from benchmarks.flops import count_torch, hand_count

    assert count_torch() == pytest.approx(hand_count(), rel=0.05)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_progress_bar_over_the_batches(store, monkeypatch, capsys):
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    model = mlp()
    loader = DataLoader(dataset(40), batch_size=4)
    with start_run("bar", tracking_uri=store) as run:
        settings = mt.Settings(device="cpu")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        mt.fit(run, model, optimizer, loader, loader, epochs=2, settings=settings)
    bar = screen.getvalue()
    assert "epoch 2/2" in bar and "/10 [" in bar and "batch" in bar  # tqdm over the 10 batches
    assert capsys.readouterr().out.count("epoch ") == 2  # and one line per epoch on stdout


# -- seed 004's recipe mechanics: schedules, clipping, loss / k, no loss scaling, metrics --------
@pytest.mark.parametrize(
    ("every", "steps"), [("micro_batch", 5), ("optimizer_step", 3), ("epoch", 1)]
)
def test_a_scheduler_steps_every_micro_batch_optimizer_step_or_epoch(store, every, steps):
    """10 samples in micro-batches of 2 with k=2: 5 micro-batches, 3 optimizer steps, 1 epoch.
    The seed's OneCycleLR is stepped per micro-batch under accumulation, before the first
    optimizer step: torch's warning about that order is not shown."""
    import warnings

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    loader = DataLoader(dataset(10), batch_size=2)
    with start_run("s", tracking_uri=store) as run, warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mt.fit(
            run,
            model,
            opt,
            loader,
            loader,
            epochs=1,
            settings=mt.Settings(accumulation_steps=2),
            scheduler=scheduler,
            scheduler_every=every,
        )
    assert scheduler.last_epoch == steps


def test_gradients_are_clipped_by_value_before_the_step(store):
    """SGD at lr 1 moves each weight by its gradient: clipped to ±0.01, by at most 0.01."""
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    loader = DataLoader(dataset(8), batch_size=8)
    with start_run("c", tracking_uri=store) as run:
        settings = mt.Settings(clip_grad_value=0.01)
        mt.fit(run, model, torch.optim.SGD(model.parameters(), lr=1.0), loader, loader,
               epochs=1, settings=settings)  # fmt: skip
    moved = max(
        float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before, strict=True)
    )
    assert 0.0099 < moved <= 0.01 + 1e-7


def test_divide_weighs_every_micro_batch_one_kth_as_the_seed(store):
    """Seed 004's loss / accum_iter: a last window of one micro-batch of 1 sample counts half."""
    data = dataset(10)
    accumulated, reference = mlp(), mlp()
    loader = DataLoader(data, batch_size=3, shuffle=False)  # micro-batches 3, 3, 3, 1
    with start_run("d", tracking_uri=store) as run:
        settings = mt.Settings(accumulation_steps=2, accumulation_loss="divide")
        mt.fit(run, accumulated, torch.optim.SGD(accumulated.parameters(), lr=0.5), loader,
               loader, epochs=1, settings=settings)  # fmt: skip
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    x, y = data.tensors
    for window in ([(0, 3), (3, 6)], [(6, 9), (9, 10)]):
        ref_opt.zero_grad()
        for a, b in window:
            (nn.functional.cross_entropy(reference(x[a:b]), y[a:b]) / 2).backward()
        ref_opt.step()
    for a, b in zip(accumulated.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_mixed_fp16_without_loss_scaling_runs_fp16_autocast_and_no_scaler(store, client):
    """The seed-004 ResNet50 tuned arm: fp16 autocast, no GradScaler (--no-loss-scaling)."""
    model = AutocastProbe()
    loader = DataLoader(dataset(8), batch_size=4)
    with start_run("n", tracking_uri=store) as run:
        settings = mt.Settings(precision="mixed_fp16", device="cpu", loss_scaling=False)
        mt.fit(run, model, torch.optim.Adam(model.parameters()), loader, loader, epochs=1,
               settings=settings)  # fmt: skip
    assert (True, torch.float16) in model.seen
    [r] = all_runs(client, "n")
    assert r.data.tags["torch.precision_run"] == "mixed_fp16"
    assert "loss_scale" not in r.data.metrics and "skipped_steps" not in r.data.metrics
    assert "learning_rate" in r.data.metrics
    assert 0 <= r.data.metrics["accuracy"] <= 1  # the epoch's running training accuracy


def test_classification_scores_are_the_seeds_metrics():
    # 5 samples in evaluation batches of 2: hits [1, 1, 0, 1, 0] -> batches 1, 0.5, 0.
    labels = np.array([0, 1, 2, 0, 1])
    logits = np.full((5, 7), -1.0, dtype=np.float32)
    for i, predicted in enumerate([0, 1, 1, 0, 0]):
        logits[i, predicted] = 1.0
    logits[4, 1] = 0.5  # second best: a top-5 hit for sample 4
    scores = classification_scores(labels, logits, batch_size=2)
    assert scores["accuracy"] == pytest.approx(0.6)
    assert scores["f1_micro_batch_mean"] == pytest.approx(0.5)  # the ResNet50 files' F1
    assert scores["precision_macro"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert scores["recall_macro"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert scores["top5_accuracy"] == pytest.approx(1.0)


def test_image_input_resizes_bicubic_inside_the_model():
    layer = mt.ImageInput((0.5,) * 3, (0.25,) * 3, input_size=32, model_size=224, mode="bicubic")
    out = layer(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32


def test_a_compiled_model_trains_exports_and_logs_its_compile_cost(store, client, tmp_path):
    """Issue 29: a torch.compile'd model failed at export (pytorch/pytorch#117758)."""
    loader = DataLoader(dataset(24), batch_size=4)
    model = torch.compile(mlp())
    with start_run("compiled", tracking_uri=store) as run:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trained, _ = mt.fit(run, model, optimizer, loader, loader, epochs=2, settings=mt.Settings())
        assert trained is model  # the caller's compiled module comes back
        assert mt.export(run, trained, torch.randn(3, 6), precision="fp32")
    [r] = all_runs(client, "compiled")
    assert r.info.status == "FINISHED" and r.data.tags["reload_ok"] == "true"
    assert r.data.tags["torch.compiled"] == "true" and r.data.tags["compile.in_epoch"] == "0"
    assert r.data.metrics["compile_wall_s"] > 0
    # FLOPs counted on the eager module: 2 x (6*16 + 16*3) x 3 (forward + backward) - input grad
    assert float(r.data.params["model.train_flops_per_sample"]) > 0
    folder = client.download_artifacts(r.info.run_id, "model", str(tmp_path))
    program = torch.export.load(f"{folder}/model.pt2")
    assert program.state_dict and not [k for k in program.state_dict if "_orig_mod" in k]
    scripted = torch.jit.load(f"{folder}/model.torchscript.pt")
    assert not [k for k in scripted.state_dict() if "_orig_mod" in k]
