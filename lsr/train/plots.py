"""``metrics.png`` from a run's ``metrics.jsonl``: what a trainer's log says at a glance.

Three panels over optimizer steps: the ranking loss and the weighted regulariser (λ × value);
λ_d (and λ_q) under the warm-up with the raw regulariser value; at each dev evaluation nDCG@10
with mean document nnz on a second axis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["plot_metrics", "read_metrics"]


def read_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(training rows, dev evaluation rows)`` of a ``metrics.jsonl``."""
    train: list[dict[str, Any]] = []
    dev: list[dict[str, Any]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            (dev if row.get("eval") else train).append(row)
    return train, dev


def plot_metrics(metrics: str | Path, target: str | Path) -> bool:
    """Draw ``target`` (PNG) from ``metrics``; False when matplotlib is missing or there is
    nothing to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    train, dev = read_metrics(metrics)
    if not train:
        return False
    steps = [r["step"] for r in train]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    ax = axes[0]
    ax.plot(steps, [r.get("base_loss", r.get("loss")) for r in train], label="ranking loss")
    reg = [r.get("document_regularizer_loss") for r in train]
    if any(v is not None for v in reg):
        ax.plot(steps, [v or 0.0 for v in reg], label="λ_d × document regulariser")
    ax.set_xlabel("step")
    ax.set_title("loss parts")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(steps, [r.get("lambda_d") or 0.0 for r in train], label="λ_d")
    if any(r.get("lambda_q") is not None for r in train):
        ax.plot(steps, [r.get("lambda_q") or 0.0 for r in train], label="λ_q")
    ax.set_xlabel("step")
    ax.set_title("regulariser weight (warm-up)")
    ax.legend(fontsize=8, loc="upper left")
    values = [r.get("document_regularizer_value") for r in train]
    if any(v is not None for v in values):
        twin = ax.twinx()
        twin.plot(steps, [v or 0.0 for v in values], color="tab:gray", alpha=0.6)
        twin.set_ylabel("document regulariser value", color="tab:gray")
    ax = axes[2]
    if dev:
        ax.plot([r["step"] for r in dev], [r["dev_ndcg_cut_10"] for r in dev], "o-")
        ax.set_ylabel("dev nDCG@10")
        twin = ax.twinx()
        twin.plot([r["step"] for r in dev], [r["doc_nnz"] for r in dev], "s--", color="tab:red")
        twin.set_ylabel("document nnz", color="tab:red")
    ax.set_xlabel("step")
    ax.set_title("dev evaluations")
    fig.tight_layout()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return True
