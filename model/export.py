"""Export a trained model as TorchScript for batch scoring (SPEC 6).

The exported program takes the batch dict of :mod:`model.data` (only the keys the model reads are needed)
and returns per-task probabilities (B, T). It is produced by tracing in eval mode (batch-norm statistics
frozen, GRec routes fixed); the table meta and model options travel in the archive as ``meta.json``, so a
scorer needs no Python model code::

    scorer = torch.jit.load("mgoe.pt")
    probs = scorer(batch)                       # batch from ExampleStream(...)
"""

from __future__ import annotations

import json
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


def export_torchscript(model: nn.Module, example: dict[str, torch.Tensor], path: str | Path, info: dict) -> Path:
    """Trace ``model`` (eval mode) on ``example`` and save it with ``info`` as ``meta.json`` inside."""
    model.eval()
    head = ProbabilityHead(model).eval()
    with torch.no_grad():
        traced = torch.jit.trace(head, (example,), strict=False, check_trace=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(path), _extra_files={"meta.json": json.dumps(info, default=str)})
    return path


def load_scorer(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """The exported program and its ``meta.json``."""
    extra = {"meta.json": ""}
    scorer = torch.jit.load(str(path), _extra_files=extra)
    return scorer, json.loads(extra["meta.json"] or "{}")
