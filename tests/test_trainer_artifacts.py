"""What the trainer leaves on disk survives failures: a checkpoint save that fails half-way keeps the previous
checkpoint loadable (model/train.py), and ``load_scorer`` (model/export.py) tries TorchScript only for a
TorchScript file, so a torch.export archive that fails to load reports its own error. Tiny models: about 3 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from model import export
from model.train import save_checkpoint


class Doubler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return batch["x"] * self.scale


def _failing_save(obj, f, *args, **kwargs):
    """torch.save that dies half-way, as on a full disk or a killed process: some bytes, then an error."""
    if isinstance(f, str | Path):
        Path(f).write_bytes(b"partial")
    else:
        f.write(b"partial")
    raise OSError("No space left on device")


def test_a_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "mgoe-seed0.pt"
    model = Doubler()
    save_checkpoint(model, path, {"epoch": 1})
    with torch.no_grad():
        model.scale.fill_(5.0)
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(model, path, {"epoch": 2})
    monkeypatch.undo()
    state = torch.load(path, weights_only=True)
    assert state["scale"].item() == 2.0  # the epoch-1 checkpoint, whole
    assert json.loads(Path(f"{path}.json").read_text()) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mgoe-seed0.pt", "mgoe-seed0.pt.json"]  # no temp files
    save_checkpoint(model, path, {"epoch": 3})  # and a later save replaces it
    assert torch.load(path, weights_only=True)["scale"].item() == 5.0


def _export(tmp_path: Path, fmt: str) -> Path:
    example = {"x": torch.ones(3, 2)}
    return export.export_model(Doubler(), example, tmp_path / f"doubler-{fmt}.pt2", {"model": "doubler"}, fmt)


def test_load_scorer_reports_a_torch_export_failure_not_a_torchscript_one(tmp_path, monkeypatch):
    path = _export(tmp_path, "export")
    scorer, info = export.load_scorer(path)
    assert info == {"model": "doubler", "format": "export"}
    torch.testing.assert_close(scorer({"x": torch.ones(5, 2)}), torch.sigmoid(torch.full((5, 2), 2.0)))

    def broken_load(*args, **kwargs):
        raise RuntimeError("serialized with a newer torch.export schema")

    monkeypatch.setattr(torch.export, "load", broken_load)
    with pytest.raises(RuntimeError, match="newer torch.export schema"):
        export.load_scorer(path)


def test_load_scorer_loads_torchscript_and_rejects_other_files(tmp_path):
    scorer, info = export.load_scorer(_export(tmp_path, "torchscript"))
    assert info["format"] == "torchscript"
    torch.testing.assert_close(scorer({"x": torch.ones(4, 2)}), torch.sigmoid(torch.full((4, 2), 2.0)))
    other = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(1)}, other)  # a plain state_dict: neither kind of archive
    with pytest.raises(ValueError, match="not a model exported by mgoe"):
        export.load_scorer(other)


def test_train_refuses_a_uri_where_it_writes_with_file_io(tmp_path, capsys):
    """A report URI (the Airflow DAG with a remote output root) would become a local folder named 's3a:'."""
    import jobs.train as job
    from jobs.common import job_main

    argv = ["--examples-root", str(tmp_path / "missing"), "--report", "s3a://bucket/report", "--profile", "test"]
    assert job_main(job, argv) == 2
    err = capsys.readouterr().err
    assert "--report 's3a://bucket/report' is a URI" in err and "MGOE_REPORT_ROOT" in err
    assert not (tmp_path / "s3a:").exists()
