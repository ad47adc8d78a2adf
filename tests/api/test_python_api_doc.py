"""The code of docs/python-api.md runs as written and does what its text says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from semisup.inference import TrainedModel

DOC = Path(__file__).resolve().parents[2] / "docs" / "python-api.md"


def python_blocks(markdown: str) -> list[str]:
    """The ```python fenced blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def test_the_python_api_page_runs(tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) == 5
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "python_api_doc"}
    exec(compile("\n".join(blocks), str(DOC), "exec"), namespace)

    clf = namespace["clf"]
    assert clf.classes_.tolist() == list(range(10)) and clf.n_features_in_ == 64
    for run in ("digits-fixmatch", "digits-smallnet", "digits-wide"):
        files = {p.name for p in (tmp_path / "runs" / run).iterdir()}
        assert {"config.yaml", "checkpoint.pt", "metrics.jsonl", "summary.json"} <= files
    result = namespace["result"]
    assert result.run_dir == Path("runs/digits-wide")
    trained = namespace["trained"]
    assert isinstance(trained, TrainedModel) and trained.image_shape == (1, 8, 8)
    images = torch.from_numpy(namespace["test_images"][:20, None])
    expected = result.model.predict(images).probabilities
    assert torch.allclose(trained.predict(images).probabilities, expected, atol=1e-6)
    scores = namespace["scores"]
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
