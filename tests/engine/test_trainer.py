"""The one training loop: run directory, logs, schedules, accumulation, resume, refusal messages."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from ssl_platform.checkpoint.io import load_checkpoint
from ssl_platform.data.collate import TransformedDataset
from ssl_platform.engine.run_dir import recipe_differences
from ssl_platform.engine.schedules import warmup_cosine
from ssl_platform.engine.step_flags import NonFiniteLossError
from ssl_platform.engine.trainer import TrainConfig, fit, seed_everything
from ssl_platform.methods.base import Method


class Points(Dataset):
    """64 fixed random vectors with 4 classes; `(sample, label)` like every dataset here."""

    def __init__(self, n=64, dim=6):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, dim, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i % 4


def jitter(x):
    # draws from torch's global RNG: exercises the per-draw seeding of TransformedDataset
    return {"image": x + 0.05 * torch.randn_like(x)}


class Backbone(nn.Module):
    num_features = 8

    def __init__(self, dim=6):
        super().__init__()
        self.fc = nn.Linear(dim, 8)

    def forward_features(self, x):
        return torch.tanh(self.fc(x))

    def forward_head(self, x, pre_logits=False):
        return x


class Regress(Method):
    """A batch-split-invariant toy method (no BatchNorm): regress a fixed random target."""

    def __init__(self, nan_at_call=None):
        super().__init__()
        self.backbone = Backbone()
        self.head = nn.Linear(8, 3)
        self.calls = 0
        self.nan_at_call = nan_at_call
        self.progress = []

    def forward(self, batch):
        self.calls += 1
        y = self.head(self.backbone.forward_features(batch["image"]))
        loss = (y - batch["image"][:, :3]).pow(2).mean() + 0.01 * torch.rand(())
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * float("nan")
        return {"loss": loss, "y_mean": y.mean()}

    def on_step_end(self, progress):
        self.progress.append(progress)


def run(out_dir, *, epochs=2, max_steps=None, batch_size=8, accum=1, method=None, recipe=None, **train):
    seed_everything(0)
    method = method or Regress()
    cfg = TrainConfig(epochs=epochs, max_steps=max_steps, warmup_epochs=1, accum_steps=accum,
                      save_every_steps=3, log_every_steps=2, **train)
    result = fit(method, TransformedDataset(Points(), jitter),
                 lambda groups: torch.optim.SGD(groups, lr=0.5, momentum=0.9, weight_decay=1e-3), cfg,
                 out_dir=out_dir, batch_size=batch_size, recipe=recipe or {"name": "toy", "train": {"epochs": epochs}})
    return method, result


def weights(out_dir):
    return load_file(str(out_dir / "backbone.safetensors"))


def test_run_directory_and_metrics(tmp_path):
    method, result = run(tmp_path / "run")
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == ["backbone.safetensors", "checkpoints", "config.yaml",
                                                     "metrics.jsonl", "tb"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.pt"]
    assert any((out / "tb").iterdir())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12, 14, 16]  # 64/8 = 8 steps/epoch, 2 epochs
    assert {"step", "epoch", "train/loss", "train/y_mean", "lr", "wd", "samples_per_s"} <= set(rows[0])
    # lr follows the per-step warmup-cosine of the global-batch-scaled peak (0.5 * 8/256)
    peak = 0.5 * 8 / 256
    for r in rows:
        assert r["lr"] == pytest.approx(warmup_cosine(r["step"] - 1, 16, 8, peak))
    assert result["step"] == 16 and result["epoch"] == 2
    assert method.progress[-1] == 1.0 and len(method.progress) == 16
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt["step"] == 16 and ckpt["recipe"]["name"] == "toy"


def test_resume_equals_uninterrupted_mid_epoch(tmp_path):
    run(tmp_path / "straight")
    run(tmp_path / "split", max_steps=5)  # stops mid-epoch (8 steps per epoch), checkpoint at 5
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["micro_in_epoch"] == 5
    run(tmp_path / "split")  # same recipe, max_steps may change: resumes at 5
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "resumed logs must not repeat steps"


def test_resume_refuses_changed_recipe_naming_the_key(tmp_path):
    run(tmp_path / "r", max_steps=2, recipe={"name": "toy", "train": {"epochs": 2, "max_steps": 2}})
    with pytest.raises(ValueError, match=r"train.epochs: 2 -> 3"):
        run(tmp_path / "r", recipe={"name": "toy", "train": {"epochs": 3, "max_steps": None}})
    assert recipe_differences({"train": {"max_steps": 1, "lr": 1}}, {"train": {"max_steps": 9, "lr": 1}}) == []


def test_a_key_added_since_a_run_was_written_resumes_only_at_the_value_that_run_had():
    old = {"data": {"batch_size": 8}}  # written before data.views_on existed: views were made in the workers
    assert recipe_differences(old, {"data": {"batch_size": 8, "views_on": "workers"}}) == []
    assert recipe_differences(old, {"data": {"batch_size": 8, "views_on": "device"}}) == [
        "data.views_on: 'workers' -> 'device'"]


def test_resume_never_refuses_existing_run(tmp_path):
    run(tmp_path / "r", max_steps=1)
    with pytest.raises(FileExistsError, match="train.resume=never"):
        run(tmp_path / "r", resume="never")


def test_gradient_accumulation_matches_large_batch(tmp_path):
    # accum 2 x batch 4 == batch 8: same lr (same global batch), same mean gradient; the per-draw
    # seeds make the augmentations identical too
    m1, _ = run(tmp_path / "a", batch_size=8, accum=1, max_steps=3)
    m2, _ = run(tmp_path / "b", batch_size=4, accum=2, max_steps=3)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_resume_with_accumulation_instead_of_a_larger_batch_continues_the_same_steps(tmp_path, capsys):
    """Stopped mid-epoch at batch 8, resumed as 2 x 4 (same global batch): the same samples per step, so
    this batch-split-invariant method ends with the uninterrupted run's weights; the change is announced."""
    run(tmp_path / "straight", batch_size=8, accum=1)
    run(tmp_path / "split", batch_size=8, accum=1, max_steps=5)
    capsys.readouterr()
    run(tmp_path / "split", batch_size=4, accum=2)
    assert "train.accum_steps 1 -> 2: each step trains on the same samples, 4 per forward pass instead of 8" \
        in capsys.readouterr().out
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"global batch 4 .*set data.batch_size=8"):
        run(tmp_path / "split", batch_size=4, accum=1)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    run(tmp_path / "r", max_steps=3)
    before = (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 4.*last good checkpoint.*is kept"):
        run(tmp_path / "r", method=Regress(nan_at_call=1))
    assert (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes() == before


def test_clip_grad_bounds_the_update(tmp_path):
    m_free, _ = run(tmp_path / "free", max_steps=1)
    m_clip, _ = run(tmp_path / "clip", max_steps=1, clip_grad=1e-4)
    seed_everything(0)
    init = Regress()
    moved_free = sum((p - q).abs().sum() for p, q in zip(m_free.parameters(), init.parameters()))
    moved_clip = sum((p - q).abs().sum() for p, q in zip(m_clip.parameters(), init.parameters()))
    assert moved_clip < moved_free / 10


def test_too_small_dataset_says_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="lower data.batch_size"):
        run(tmp_path / "r", batch_size=128)


def test_tensorboard_holds_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path / "r", max_steps=4)
    events = EventAccumulator(str(tmp_path / "r" / "tb"))
    events.Reload()
    assert {"train/loss", "lr", "wd", "samples_per_s"} <= set(events.Tags()["scalars"])
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    tb_loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in tb_loss] == [r["step"] for r in logged]
    for (_, value), row in zip(tb_loss, logged):
        assert value == pytest.approx(row["train/loss"], rel=1e-6)


def test_bf16_autocast_and_channels_last_run_on_cpu(tmp_path):
    method, result = run(tmp_path / "r", max_steps=3, precision="bf16", channels_last=True)
    assert result["step"] == 3
    assert all(torch.isfinite(p).all() for p in method.parameters())


def test_unknown_precision_is_refused(tmp_path):
    with pytest.raises(ValueError, match="train.precision must be"):
        run(tmp_path / "r", max_steps=1, precision="fp8")


@pytest.mark.slow
def test_torch_compile_option_trains(tmp_path):
    _, _eager = run(tmp_path / "eager", max_steps=2)
    _, _compiled = run(tmp_path / "compiled", max_steps=2, compile=True)
    a, b = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)



# ---- the hooks `Method` declares: the trainer calls each directly, the defaults are plain training


class FirstHalf:
    """A batch sampler over the first half of each epoch's shuffled order, twice (indices < 32 only)."""

    def __init__(self, seed, batch_size):
        from ssl_platform.data.samplers import ResumableSampler

        self.order, self.batch_size, self.start, self.seen = ResumableSampler(64, seed=seed), batch_size, 0, set()

    def set_epoch(self, epoch):
        self.order.set_epoch(epoch)

    def set_start(self, start):
        self.start = start

    def batches_per_epoch(self, batch_size):
        return 64 // batch_size

    def __iter__(self):
        low = [draw for draw in self.order if draw[0] < 32]
        draws = (low + low)[self.start:]
        for i in range(0, len(draws) - self.batch_size + 1, self.batch_size):
            self.seen |= {index for index, _ in draws[i:i + self.batch_size]}
            yield draws[i:i + self.batch_size]


class Hooked(Regress):
    """Overrides every training hook `Method` declares, recording how the trainer calls them."""

    def __init__(self):
        super().__init__()
        self.epochs, self.sampler_args, self.sampler = [], None, None

    def on_epoch_start(self, epoch):
        self.epochs.append(epoch)

    def param_groups(self):
        # the head learns at a tenth of the backbone's rate and is never decayed
        return [{"params": list(self.backbone.parameters())},
                {"params": list(self.head.parameters()), "lr_scale": 0.1, "wd_scale": 0.0}]

    def make_batch_sampler(self, dataset, *, batch_size, num_replicas, rank, seed, out_dir):
        self.sampler_args = {"n": len(dataset), "batch_size": batch_size, "replicas": num_replicas, "rank": rank,
                             "seed": seed, "out_dir": out_dir}
        self.sampler = FirstHalf(seed, batch_size)
        return self.sampler


def test_the_trainer_calls_every_hook_a_method_overrides(tmp_path):
    method, result = run(tmp_path / "r", method=Hooked(), epochs=3, max_steps=20)
    assert result["step"] == 20 and method.epochs == [0, 1, 2]  # each epoch once, by its number
    assert method.sampler_args == {"n": 64, "batch_size": 8, "replicas": 1, "rank": 0, "seed": 0,
                                   "out_dir": tmp_path / "r"}
    assert method.sampler.seen == set(range(32))  # every batch came from the method's sampler
    groups = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    peak = 0.5 * 8 / 256  # the recipe's lr for the global batch, times each group's lr_scale
    assert [g["peak_lr"] for g in groups] == pytest.approx([peak, 0.1 * peak])
    assert groups[0]["weight_decay"] > 0 and groups[1]["weight_decay"] == 0.0


def test_the_defaults_of_method_are_plain_training():
    method = Regress()
    assert method.make_batch_sampler(Points(), batch_size=8, num_replicas=1, rank=0, seed=0, out_dir=".") is None
    assert method.no_weight_decay() == set()
    names = {id(p): n for n, p in method.named_parameters()}
    assert [sorted(names[id(p)] for p in g["params"]) for g in method.param_groups()] == [
        ["backbone.fc.weight", "head.weight"], ["backbone.fc.bias", "head.bias"]]
    x = torch.randn(5, 6)
    assert torch.equal(method.embed({"image": x}), method.backbone.forward_head(method.backbone.forward_features(x)))
