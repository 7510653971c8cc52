"""Export a trained model for batch scoring (SPEC 6): ``torch.export`` (default) or TorchScript.

The exported program takes the batch dict of :mod:`model.data` and returns per-task probabilities (B, T),
with a dynamic batch size. It is captured in eval mode (batch-norm statistics frozen, GRec routes fixed);
the table meta and model options travel inside the archive as ``meta.json``, so a scorer needs no model
code::

    scorer, info = load_scorer("mgoe.pt2")
    probs = scorer(batch)                       # batch from ExampleStream(...)

``fmt="torchscript"`` traces instead (``torch.jit``, deprecated upstream but loadable from C++).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch
from torch import nn


class ProbabilityHead(nn.Module):
    """Wraps a model returning logits so the exported program returns probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(self.model(batch))


def export_model(
    model: nn.Module, example: dict[str, torch.Tensor], path: str | Path, info: dict, fmt: str = "export"
) -> Path:
    """Capture ``model`` (eval mode) on ``example`` and save it with ``info`` as ``meta.json`` inside."""
    if fmt not in ("export", "torchscript"):
        raise ValueError(f"export format must be 'export' or 'torchscript', got {fmt!r}")
    model.eval()
    head = ProbabilityHead(model).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"meta.json": json.dumps({**info, "format": fmt}, default=str)}
    with torch.no_grad():
        if fmt == "export":
            batch = torch.export.Dim("batch", min=1)
            shapes = {"batch": {k: {0: batch} for k in example}}
            program = torch.export.export(head, (example,), dynamic_shapes=shapes)
            torch.export.save(program, str(path), extra_files=extra)
        else:
            traced = torch.jit.trace(head, (example,), strict=False, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def archive_kind(path: str | Path) -> str:
    """``"export"`` for a torch.export archive, ``"torchscript"`` for a TorchScript one, from the zip's entry
    names (``<name>/archive_format`` vs ``<name>/data.pkl`` + ``<name>/code/``); ``ValueError`` otherwise.
    Cost: reads the zip's central directory only."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.split("/", 1)[1] for name in archive.namelist() if "/" in name}
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(f"{path} is not a model exported by mgoe (mgoe train --export): {exc}") from None
    if "archive_format" in names:
        return "export"
    if "data.pkl" in names and any(name.startswith("code/") for name in names):
        return "torchscript"
    raise ValueError(
        f"{path} is not a model exported by mgoe (mgoe train --export): neither torch.export nor TorchScript"
    )


def load_scorer(path: str | Path):
    """(callable scorer, ``meta.json`` dict) for a file written by :func:`export_model`. The archive's kind
    decides the loader, so a torch.export archive that fails to load raises its own error."""
    extra = {"meta.json": ""}
    if archive_kind(path) == "export":
        scorer = torch.export.load(str(path), extra_files=extra).module()
    else:
        scorer = torch.jit.load(str(path), _extra_files=extra)
    return scorer, json.loads(extra["meta.json"] or "{}")
