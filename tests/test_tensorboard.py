from __future__ import annotations

import math

import pytest

from semisup.config import build_config
from semisup.engine import tensorboard
from semisup.engine.tensorboard import (
    TensorBoardLogger,
    build_loggers,
    record_scalars,
    scalar_tag,
)
from semisup.errors import UserError
from semisup.experiment import build_trainer


def read_events(log_dir) -> dict[str, list[tuple[int, float]]]:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_tags_group_test_train_and_time_scalars():
    assert scalar_tag("test_accuracy") == "test/accuracy"
    assert scalar_tag("test_accuracy_raw") == "test/accuracy_raw"
    assert scalar_tag("loss_u") == "train/loss_u"
    assert scalar_tag("mask_rate") == "train/mask_rate"
    assert scalar_tag("wall_seconds") == "time/wall_seconds"


def test_record_scalars_keep_finite_numbers_and_add_the_kl_divergence():
    record = {
        "step": 50,
        "loss": 0.5,
        "pseudo_label_accuracy": None,
        "mask_rate": float("nan"),
        "per_class_accuracy": [0.5, 0.5],
        "unlabeled_distribution": [0.25, 0.75],
        "test_accuracy": 0.9,
    }
    scalars = record_scalars(record, [0.5, 0.5])
    expected_kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert scalars == pytest.approx(
        {
            "train/loss": 0.5,
            "test/accuracy": 0.9,
            "train/kl_labeled_vs_unlabeled_prediction": expected_kl,
        }
    )
    assert "train/kl_labeled_vs_unlabeled_prediction" not in record_scalars(record, None)


def test_logger_writes_readable_events_and_purges_them_on_resume(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional extra)")
    logger = TensorBoardLogger(tmp_path, [1, 1])
    for step, loss in ((10, 1.0), (20, 0.5), (30, 0.25)):
        logger.log({"step": step, "loss": loss})
    logger.close()
    assert read_events(tmp_path)["train/loss"] == [(10, 1.0), (20, 0.5), (30, 0.25)]

    # a resumed run restarts from its checkpoint at step 20: step 30 is written again
    resumed = TensorBoardLogger(tmp_path, [1, 1])
    resumed.log({"step": 30, "loss": 0.3})
    resumed.close()
    assert read_events(tmp_path)["train/loss"] == [(10, 1.0), (20, 0.5), (30, pytest.approx(0.3))]


def test_build_loggers_follows_the_config_key(tmp_path, monkeypatch):
    assert build_loggers(False, tmp_path, [1]) == ()
    assert build_loggers(True, None, [1]) == ()
    monkeypatch.setattr(tensorboard, "tensorboard_available", lambda: False)
    assert build_loggers(None, tmp_path, [1]) == ()
    with pytest.raises(UserError, match="pip install tensorboard"):
        build_loggers(True, tmp_path, [1])
    monkeypatch.setattr(tensorboard, "tensorboard_available", lambda: True)
    (logger,) = build_loggers(None, tmp_path, [1])
    assert isinstance(logger, TensorBoardLogger)
    assert logger.log_dir == tmp_path / "tensorboard"


def test_training_writes_event_files_by_default(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional extra)")
    cfg = build_config(
        None,
        {
            "algorithm.name": "fixmatch",
            "train.steps": 4,
            "train.eval_every": 2,
            "train.batch_size": 8,
            "train.progress": False,
        },
    )
    assert cfg.train.tensorboard is None  # auto: on when installed
    build_trainer(cfg, tmp_path).fit()
    events = read_events(tmp_path / "tensorboard")
    assert [step for step, _ in events["test/accuracy"]] == [2, 4]
    assert [step for step, _ in events["train/mask_rate"]] == [2, 4]
    assert "train/kl_labeled_vs_unlabeled_prediction" in events
