"""The committed SciFact evaluation: BM25 (bm25s, Pyserini), splade-tiny with siamese and with
inference-free queries, MiniLM dense, and their hybrids (α tuned on train).

``python -m eval.beir_scifact`` runs ``lsr.beir_eval.run_beir`` (what ``lsr eval beir`` runs)
with runs and caches under ``eval/work/`` and copies the reports to
``eval/results/beir_scifact.{json,md,png}``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from eval.bench_index import machine_info
from eval.fidelity import SCIFACT, SPLADE_TINY
from lsr.beir_eval import BeirEvalConfig, run_beir
from lsr.report import write_reports

HERE = Path(__file__).parent


def main() -> None:
    work = HERE / "work" / "beir-scifact"
    config = BeirEvalConfig(
        data=SCIFACT,
        output=work,
        mode="hybrid",
        model=str(SPLADE_TINY),
        query_modes=["siamese", "inference-free"],
        baselines=["bm25s", "pyserini"],
        query_max_length=64,
        doc_max_length=256,
        depth=1000,
    )
    report = run_beir(config, progress=True)
    report["machine"] = machine_info()
    written = write_reports(report, work)
    for path in written:
        shutil.copyfile(path, HERE / "results" / f"beir_scifact{path.suffix}")
    print((HERE / "results" / "beir_scifact.md").read_text())


if __name__ == "__main__":
    main()
