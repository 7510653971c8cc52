"""Component ablations of MGOE on a planted synthetic table (model/synthetic.py): ``python -m
bench.model_ablation --json PATH``.

Each row is one setting (config overrides of ``train.*`` on MGOE, or another model) trained over the same
seeds on the same table; the JSON holds test mean AUC (mean, std over seeds), per-task AUC and the load
average. Used to pick defaults by measurement (attention form, adjustment form, Eq 11 own macro embeddings,
micro-neighbor attention; issue 27's options: normalized attention, full-input gates, the lookup over tasks,
MacGNN-style with own macros, MMoE on MGOE's inputs) before the slower pipeline benchmark (:mod:`bench.model_quality`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

SETTINGS: dict[str, tuple[str, list[str]]] = {
    "mgoe (defaults)": ("mgoe", []),
    "attention=neighbors (literal w*alpha)": ("mgoe", ["train.attention=neighbors"]),
    "attention=off": ("mgoe", ["train.attention='off'"]),
    "adjust_form=literal": ("mgoe", ["train.adjust_form=literal"]),
    "adjust_form=tower": ("mgoe", ["train.adjust_form=tower"]),
    "own_macro=false (no Eq 11 input)": ("mgoe", ["train.own_macro=false"]),
    "mgoe_no_adjust": ("mgoe_no_adjust", []),
    "mgoe_no_cascade": ("mgoe_no_cascade", []),
    "macgnn": ("macgnn", []),
    "mmoe": ("mmoe", []),
    "ple": ("ple", []),
    "grec": ("grec", []),
    "recent_attention=true": ("mgoe", ["train.recent_attention=true"]),
    "adjust_form=log_macro gamma_init=0": ("mgoe", ["train.gamma_init=0"]),
    "adjust_form=tower cascade off": ("mgoe_no_cascade", ["train.adjust_form=tower"]),
    # issue 27 items 5-6 (options; each row's ablation is "mgoe (defaults)" or "macgnn" / "mmoe")
    "attention_norm=true (cos q.k with a learned temperature)": ("mgoe", ["train.attention_norm=true"]),
    "gate_input=full (Eq 12 gates on e_u e_i MGE)": ("mgoe", ["train.gate_input=full"]),
    "gate_input=off (w/o bottom gates: x^t = MGE^t)": ("mgoe", ["train.gate_input='off'"]),
    "lookup_norm=tasks (SPEC 4.7 over tasks)": ("mgoe", ["train.lookup_norm=tasks"]),
    "macgnn_own_macro=true": ("macgnn", ["train.macgnn_own_macro=true"]),
    "mmoe_full (MMoE on MGOE's inputs)": ("mmoe_full", []),
}


def main(argv: list[str] | None = None) -> int:
    from mgoe_spark.config import load_config
    from model.synthetic import SyntheticSpec, generate_examples, write_examples
    from model.train import train_models

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default="bench/results/model_ablation.json")
    p.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--groups", type=int, default=6)
    p.add_argument("overrides", nargs="*", help="train.* overrides applied to every setting")
    args = p.parse_intermixed_args(argv)
    spec = SyntheticSpec(
        users=args.users, items=args.items, user_groups=args.groups, item_groups=args.groups, recent_len=10
    )
    root = tempfile.mkdtemp(prefix="mgoe-ablation-")
    write_examples(generate_examples(spec), root, "2024-01-01", row_group_rows=2048)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SETTINGS)
    out = {"spec": json.loads(json.dumps(spec.__dict__)), "load_before": os.getloadavg(), "settings": {}}
    if os.path.exists(args.json):  # resume: keep the settings already measured on this spec
        old = json.load(open(args.json))
        if old.get("spec") == out["spec"]:
            out["settings"] = old["settings"]
    for name in names:
        if name in out["settings"]:
            continue
        model, overrides = SETTINGS[name]
        cfg = load_config(
            profile="test",
            overrides=[
                "train.seeds=[0, 1, 2]",
                "train.epochs=6",
                "train.patience=2",
                "train.threads=1",
                *args.overrides,
                *overrides,
            ],
        )
        t0 = time.perf_counter()
        res = train_models(cfg, root, None, [model], progress=False)["models"][model]
        row = {
            "model": model,
            "overrides": overrides,
            "auc_mean": res["auc_mean"],
            "auc_mean_std": res["auc_mean_std"],
            "auc": {t: v["mean"] for t, v in res["auc"].items()},
            "seconds": round(time.perf_counter() - t0, 1),
        }
        out["settings"][name] = row
        print(
            f"{name:40s} {row['auc_mean']:.4f} +- {row['auc_mean_std']:.4f}  "
            + " ".join(f"{t}={a:.3f}" for t, a in row["auc"].items())
            + f"  ({row['seconds']} s)",
            flush=True,
        )
    out["load_after"] = os.getloadavg()
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
