import pytest
import torch

from semisup.config import build_config
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.guard import NonFiniteLossError
from semisup.experiment import build_trainer

TINY = {
    "train.steps": 6,
    "train.eval_every": 3,
    "train.batch_size": 8,
    "train.progress": False,
    "algorithm.mu": 2,
}


def _trainer(run_dir, **overrides):
    cfg = build_config(None, {**TINY, **overrides})
    return build_trainer(cfg, run_dir)


class CrashAt:
    """A callback that raises mid-run, after the optimizer step of `step` (like a kill)."""

    name = "crash"

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, raw, step):
        if step + 1 == self.step:
            raise KeyboardInterrupt

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def _assert_same_state(a, b):
    assert a["step"] == b["step"]
    for name, tensor in a["algorithm"].items():
        assert torch.equal(tensor, b["algorithm"][name]), name
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name
    for name, rates in a["callbacks"]["ctaugment"]["rates"].items():
        for r_a, r_b in zip(rates, b["callbacks"]["ctaugment"]["rates"][name], strict=True):
            assert torch.equal(r_a, r_b), name


def test_resume_after_a_crash_is_bit_identical(tmp_path):
    straight = _trainer(tmp_path / "straight")
    straight.fit()

    crashed = _trainer(tmp_path / "crashed")
    crashed.callbacks = (*crashed.callbacks, CrashAt(5))
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert load_checkpoint(tmp_path / "crashed" / "checkpoint.pt")["step"] == 3

    resumed = _trainer(tmp_path / "crashed")
    resumed.load_state_dict(load_checkpoint(tmp_path / "crashed" / "checkpoint.pt"))
    assert resumed.step == 3
    resumed.fit()
    _assert_same_state(straight.state_dict(), resumed.state_dict())

    # Same metrics, evaluation by evaluation (all but the wall-clock time).
    def drop_time(history):
        return [{k: v for k, v in r.items() if k != "wall_seconds"} for r in history]

    assert drop_time(straight.history) == drop_time(resumed.history)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = _trainer(tmp_path)
    forward = trainer.algorithm.forward

    def nan_at_step_five(batch, step):
        out = forward(batch, step)
        if step == 4:
            out["loss"] = out["loss"] * float("nan")
        return out

    trainer.algorithm.forward = nan_at_step_five
    with pytest.raises(
        NonFiniteLossError, match=r"stopped at step 5: the loss became non-finite \(loss=nan"
    ) as error:
        trainer.fit()
    assert "checkpoint.pt (step 3)" in str(error.value) and "--resume" in str(error.value)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 3
    assert all(
        torch.isfinite(t).all() for t in state["algorithm"].values() if t.is_floating_point()
    )


def test_nan_loss_can_be_skipped(tmp_path):
    trainer = _trainer(tmp_path, **{"train.nonfinite": "skip"})
    forward = trainer.algorithm.forward

    def nan_on_even_steps(batch, step):
        out = forward(batch, step)
        if step % 2 == 0:
            out["loss"] = out["loss"] * float("inf")
        return out

    trainer.algorithm.forward = nan_on_even_steps
    summary = trainer.fit()
    assert summary["steps"] == 6 and summary["skipped_steps"] == 3


def test_keep_last_checkpoints(tmp_path):
    trainer = _trainer(tmp_path, **{"train.eval_every": 1, "train.keep_checkpoints": 3})
    trainer.fit()
    numbered = sorted(p.name for p in tmp_path.glob("checkpoint-*.pt"))
    assert numbered == ["checkpoint-00000005.pt", "checkpoint-00000006.pt"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6


def test_metrics_history_and_summary(tmp_path):
    trainer = _trainer(tmp_path)
    summary = trainer.fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and [r["step"] for r in trainer.history] == [3, 6]
    record = trainer.history[-1]
    for key in (
        "test_accuracy",
        "test_balanced_accuracy",
        "test_accuracy_raw",
        "loss",
        "loss_x",
        "loss_u",
        "mask_rate",
        "lr",
        "unlabeled_distribution",
    ):
        assert key in record
    assert summary["median_last20_accuracy"] == pytest.approx(
        sorted(r["test_accuracy"] for r in trainer.history)[0] / 2
        + sorted(r["test_accuracy"] for r in trainer.history)[1] / 2
    )
    assert summary["labeled_class_counts"] == [4] * 10
    assert sum(map(sum, summary["confusion_matrix"])) == 450
