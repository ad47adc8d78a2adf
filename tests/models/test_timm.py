"""timm networks: the features contract, pretrained weights, --init-from, algorithms, export.

These tests need the timm extra, which lives in its own environment (README, "Pretrained
networks"; `.ci/run` builds it and runs `pytest -m timm` there). Without timm they skip.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import semisup
import semisup.report
from semisup.commands import cli
from semisup.config import build_config
from semisup.engine.checkpoint import load_checkpoint
from semisup.engine.optim import parameter_groups
from semisup.errors import UserError
from semisup.experiment import build_trainer
from semisup.models import build_model
from semisup.models.inputs import Normalization, to_model_input
from semisup.pretrained import head_keys, load_pretrained

pytestmark = pytest.mark.timm
timm = pytest.importorskip(
    "timm", reason="timm is not installed: the timm tests run in the timm environment (.ci/run)"
)

IMAGENET = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/{blue,red}/ 8 images each, test/ 3 each: 32x32 noisy colour fields."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 3)):
        for channel, name in ((2, "blue"), (0, "red")):
            for i in range(count):
                image = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
                image[:, :, channel] += 120
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(root / split / name / f"{i}.png")
    return root


def train(run_dir: Path, *arguments: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(semisup.report, "report_after_training", lambda run_dir: None)
        code = cli.main(["train", *arguments, "--out", str(run_dir)])
    assert code == 0


def folder_arguments(folder: Path, steps: int, *sets: str) -> list[str]:
    common = ["train.eval_every=2", "train.batch_size=4", "train.tensorboard=false"]
    return ["--dataset", "folder", "--data-dir", str(folder), "--num-labels", "4"] + [
        "--steps",
        str(steps),
        "--set",
        *common,
        *sets,
    ]


@pytest.mark.parametrize(
    ("name", "kwargs", "size", "width"),
    [
        ("timm:resnet18", {}, 32, 512),
        ("timm:vit_tiny_patch16_224", {"timm_kwargs": {"img_size": 32, "patch_size": 8}}, 32, 192),
        ("timm:mobilenetv3_small_050", {}, 32, 1024),  # pre-logits layers after the pooling
    ],
)
def test_pooled_features_and_head_give_the_logits(name, kwargs, size, width) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, in_channels=3, **kwargs).eval()
    x = torch.randn(2, 3, size, size)
    features = model.forward_features(x)
    assert features.shape == (2, width) and model.num_features == width
    torch.testing.assert_close(model.forward_head(features), model(x))
    torch.testing.assert_close(model(x), model.net(x))  # the timm network's own forward
    assert model.head is model.net.get_classifier() and model.head.out_features == 5
    depths = model.layer_ids()
    assert set(depths) == {n for n, _ in model.named_parameters()}
    assert {depths[k] for k in head_keys(model)} == {max(depths.values())}  # the head deepest


def test_input_normalization_comes_from_the_pretrained_configuration() -> None:
    assert build_model("timm:resnet18", 2, 3).input_normalization == IMAGENET
    grey = build_model("timm:resnet18", 2, 1).input_normalization
    assert grey.mean == pytest.approx((0.449,)) and grey.std == pytest.approx((0.226,))
    vit = build_model("timm:vit_tiny_patch16_224", 2, 3, timm_kwargs={"img_size": 32})
    assert vit.input_normalization == Normalization((0.5,) * 3, (0.5,) * 3)
    given = build_model("timm:resnet18", 2, 3, input_mean=[0.1] * 3, input_std=[0.2] * 3)
    assert given.input_normalization == Normalization((0.1,) * 3, (0.2,) * 3)


def test_unknown_architectures_and_options_are_user_errors() -> None:
    with pytest.raises(UserError, match=r"timm has no architecture 'resnet17'; similar names: "):
        build_model("timm:resnet17", 2, 3)
    with pytest.raises(UserError, match="timm cannot build resnet18 with model.timm_kwargs="):
        build_model("timm:resnet18", 2, 3, timm_kwargs={"wings": 2})


def test_layer_decay_and_no_decay_follow_usb_on_a_vit() -> None:
    model = build_model("timm:vit_tiny_patch16_224", 10, 3, timm_kwargs={"img_size": 32})
    s = build_config(None, {"optim.layer_decay": 0.5}).optim
    s.name, s.lr, s.weight_decay, s.decoupled_weight_decay = "adamw", 1e-3, 5e-4, False
    groups = parameter_groups(model, s, model)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    net = model.net
    # USB (timm's group matcher): embeddings 0, block i at i + 1, the final norm with block 12,
    # the head 13: scale 0.5^(13 − depth).
    assert scale[id(net.cls_token)] == scale[id(net.patch_embed.proj.weight)] == 0.5**13
    assert scale[id(net.blocks[0].attn.qkv.weight)] == 0.5**12
    assert scale[id(net.blocks[11].mlp.fc2.weight)] == scale[id(net.norm.weight)] == 0.5
    assert scale[id(net.head.weight)] == 1.0
    assert decay[id(net.pos_embed)] == decay[id(net.cls_token)] == 0.0  # timm's no_weight_decay
    assert decay[id(net.blocks[0].attn.qkv.weight)] == 5e-4


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A timm ResNet-18 (ImageNet-sized head) saved as a plain state dict."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory: pytest.TempPathFactory, folder: Path, resnet_weights: Path):
    """2 FixMatch steps at a learning rate of 1e-9 from `resnet_weights`."""
    run_dir = tmp_path_factory.mktemp("resnet") / "run"
    sets = ["model.name=timm:resnet18", f"model.pretrained={resnet_weights}", "optim.lr=1e-9"]
    train(run_dir, *folder_arguments(folder, 2, *sets, "algorithm.mu=1", "data.image_size=32"))
    return run_dir


def test_a_saved_resnet18_is_where_training_starts(resnet_run: Path, resnet_weights: Path):
    saved = torch.load(resnet_weights, weights_only=True)
    checkpoint = load_checkpoint(resnet_run / "checkpoint.pt")
    assert checkpoint["step"] == 2
    for state, prefix in ((checkpoint["ema"], "net."), (checkpoint["algorithm"], "model.net.")):
        torch.testing.assert_close(
            state[f"{prefix}conv1.weight"], saved["conv1.weight"], atol=1e-6, rtol=0
        )
        torch.testing.assert_close(
            state[f"{prefix}layer4.1.conv2.weight"],
            saved["layer4.1.conv2.weight"],
            atol=1e-6,
            rtol=0,
        )
        assert state[f"{prefix}fc.weight"].shape == (2, 512)  # a new 2-class head
    model = yaml.safe_load((resnet_run / "config.yaml").read_text())["model"]
    assert model["input_mean"] == list(IMAGENET.mean) and model["input_std"] == list(IMAGENET.std)
    assert model["pretrained"] == str(resnet_weights)


def test_init_from_a_timm_run(resnet_run: Path, folder: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    arguments = folder_arguments(folder, 2, "optim.lr=1e-9", "algorithm.mu=1")
    train(run_dir, "--init-from", str(resnet_run), *arguments)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "timm:resnet18" and config["data"]["image_size"] == 32
    source = load_checkpoint(resnet_run / "checkpoint.pt")["ema"]
    state = load_checkpoint(run_dir / "checkpoint.pt")["ema"]
    for key in ("net.conv1.weight", "net.fc.weight"):  # the same classes: the head too
        torch.testing.assert_close(state[key], source[key], atol=1e-6, rtol=0)


@pytest.mark.parametrize("algorithm", ["simmatch", "comatch", "remixmatch"])
def test_feature_algorithms_train_a_timm_model(folder: Path, algorithm: str) -> None:
    overrides = {
        "algorithm.name": algorithm,
        "model.name": "timm:resnet18",
        "data.name": "folder",
        "data.dir": str(folder),
        "data.num_labels": 4,
        "data.image_size": 32,
        "train.steps": 2,
        "train.eval_every": 2,
        "train.batch_size": 2,
        "train.progress": False,
        "train.tensorboard": False,
    }
    overrides.update({"algorithm.k": 2} if algorithm == "remixmatch" else {"algorithm.mu": 1})
    trainer = build_trainer(build_config(None, overrides), None)
    outputs = trainer.train_step()
    assert outputs is not None and math.isfinite(outputs["loss"].item())
    assert trainer.fit()["steps"] == 2


def test_load_predict_and_export_a_timm_run(resnet_run: Path, folder: Path, tmp_path: Path):
    trained = semisup.load(resnet_run, "cpu")
    assert trained.model.input_normalization == IMAGENET
    images = trained.preprocess(sorted((folder / "test").rglob("*.png")))
    with torch.no_grad():
        logits = trained.model(to_model_input(images, normalization=IMAGENET))
    torch.testing.assert_close(trained.predict(images).probabilities, logits.softmax(dim=1))

    ort = pytest.importorskip("onnxruntime")
    onnx_path, pt2_path = tmp_path / "m.onnx", tmp_path / "m.pt2"
    assert (
        cli.main(["export", str(resnet_run), "--onnx", str(onnx_path), "--pt2", str(pt2_path)]) == 0
    )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits, _ = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(onnx_logits, logits, atol=1e-4, rtol=0)
    pt2_logits, _ = torch.export.load(pt2_path).module()(images)
    torch.testing.assert_close(pt2_logits, logits, atol=1e-5, rtol=0)


def test_a_safetensors_vit_is_resampled_to_the_image_size(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(2)
    source = timm.create_model("vit_tiny_patch16_224")  # 14x14 patches, ImageNet head
    save_file(source.state_dict(), str(tmp_path / "vit.safetensors"))
    model = build_model("timm:vit_tiny_patch16_224", 3, 3, timm_kwargs={"img_size": 32})
    load_pretrained(model, str(tmp_path / "vit.safetensors"), ("a", "b", "c"))
    assert model.net.pos_embed.shape == (1, 5, 192)  # the class token and 2x2 patches
    assert torch.equal(model.net.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)
    assert torch.equal(model.net.cls_token, source.cls_token)


def test_a_hub_model_loads_offline_from_the_local_cache(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("resnet18", num_classes=2)
    repo = tmp_path / "hub" / "models--someone--resnet18-colours"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    pretrained_cfg = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "classifier": "fc"}
    config = {"architecture": "resnet18", "num_classes": 2, "pretrained_cfg": pretrained_cfg}
    (snapshot / "config.json").write_text(json.dumps(config))
    # What HF_HUB_OFFLINE=1 and HF_HUB_CACHE=... set when huggingface_hub is imported.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    overrides = {
        "model.name": "timm:resnet18",
        "model.pretrained": "hf-hub:someone/resnet18-colours",
        "data.name": "folder",
        "data.dir": str(folder),
        "data.image_size": 32,
        "train.progress": False,
        "train.tensorboard": False,
    }
    cfg = build_config(None, overrides)
    trainer = build_trainer(cfg, None)
    model = trainer.algorithm.model
    assert torch.equal(model.net.fc.weight, source.fc.weight)  # blue and red: the head fits
    assert model.input_normalization == Normalization((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert cfg.model["input_mean"] == [0.1, 0.2, 0.3]  # written to config.yaml for `load`

    with pytest.raises(UserError, match="holds a resnet18 network, not resnet34"):
        build_trainer(build_config(None, {**overrides, "model.name": "timm:resnet34"}), None)
    with pytest.raises(UserError, match="cannot load hf-hub:someone/absent through timm"):
        build_trainer(
            build_config(None, {**overrides, "model.pretrained": "hf-hub:someone/absent"}), None
        )
