"""Evaluation reports: the JSON record, a Markdown table and a quality-vs-latency plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lsr.io import atomic_write


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """A Markdown table of every system in ``report`` (see :func:`lsr.beir_eval.run_beir`)."""
    lines = [
        f"# {report['dataset']} ({report['split']}, {report['queries']} queries)",
        "",
        *(
            ["**Incomplete: the run stopped before every system was evaluated.**", ""]
            if not report.get("complete", True)
            else []
        ),
        "| system | nDCG@10 | R@100 | MRR@10 | latency ms mean | p50 | p99 | encode ms "
        "| search ms | FLOPS | index MB | doc encode docs/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["systems"]:
        m, d = s["metrics"], s["details"]
        index_mb = d.get("index_bytes")
        lines.append(
            f"| {s['name']} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | {m['mrr@10']:.4f} "
            f"| {_fmt(s['latency_ms'].get('mean_ms'), '.3f')} "
            f"| {_fmt(s['latency_ms'].get('p50_ms'), '.3f')} "
            f"| {_fmt(s['latency_ms'].get('p99_ms'), '.3f')} "
            f"| {_fmt(s['encode_ms'].get('mean_ms'), '.3f')} "
            f"| {_fmt(s['search_ms'].get('mean_ms'), '.3f')} "
            f"| {_fmt(d.get('flops'), '.3f')} "
            f"| {_fmt(index_mb / 2**20 if index_mb else None, '.1f')} "
            f"| {_fmt(d.get('docs_per_second'), ',.1f')} |"
        )
    convex = [s for s in report["systems"] if "alpha" in s["details"]]
    if convex:
        lines += ["", "Convex fusion weights (α on the sparse run):", ""]
        for s in convex:
            split = s["details"].get("tuned_on")
            how = f"tuned on the `{split}` split" if split else "fixed, not tuned"
            lines.append(f"- {s['name']}: α = {s['details']['alpha']} ({how})")
    lines += [
        "",
        "Latency: one query at a time (query encoding + search), as a service sees it, after "
        "untimed warm-up queries (kernel compilation and first calls are not counted); "
        "hybrid latency adds each query's sparse and dense times. "
        "FLOPS: expected multiplications per query–document pair, Σ_j p_q(j)·p_d(j) "
        "(Formal et al., 2021), over this split's queries and the indexed documents.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    """nDCG@10 against mean latency per system; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"bm25": "tab:gray", "sparse": "tab:blue", "dense": "tab:green", "hybrid": "tab:red"}
    for s in report["systems"]:
        latency = s["latency_ms"].get("mean_ms")
        if latency is None:
            continue
        ax.scatter(latency, s["metrics"]["ndcg@10"], color=colors.get(s["kind"], "black"))
        ax.annotate(
            s["name"],
            (latency, s["metrics"]["ndcg@10"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("mean latency per query, ms (log scale; encode + search, one at a time)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"{report['dataset']} {report['split']}: quality vs latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_reports(report: dict[str, Any], directory: Path, stem: str = "results") -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and (with matplotlib) ``<stem>.png``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / f"{stem}.json", directory / f"{stem}.md"]
    body = json.dumps(report, indent=2, sort_keys=False) + "\n"
    atomic_write(written[0], lambda tmp: tmp.write_text(body, encoding="utf-8"))
    atomic_write(written[1], lambda tmp: tmp.write_text(markdown(report), encoding="utf-8"))
    if plot(report, directory / f"{stem}.png"):
        written.append(directory / f"{stem}.png")
    return written
