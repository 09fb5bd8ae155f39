"""``lsr train CONFIG.yaml [--set key=value ...] [--max-steps N] [--check]``: train a student.

The configuration (:class:`lsr.train.config.TrainConfig`) and the files it names are validated
before any model loads: a bad config is one line on stderr and exit code 2. Progress lines go to
stderr; the last line is a one-line summary (``--json`` prints the result as JSON on stdout).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from lsr.cli.common import friendly_errors, log


@friendly_errors
def train(
    config_path: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="training config (YAML; see docs/training.md)")
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="override a config value: dotted key=value (e.g. loss.name=kl), repeatable",
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="stop after N optimizer steps (train.max_steps)")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="output directory (train.output_dir)")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="validate the config and data paths, then exit")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Train a learned sparse encoder (SPLADE student) as CONFIG says."""
    from lsr.extras import require

    require("lsr train", "yaml", "pydantic")
    from lsr.train.config import check_paths, load_config

    overrides = list(set_ or [])
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    if output is not None:
        overrides.append(f"train.output_dir={output}")
    config = load_config(config_path, overrides)
    check_paths(config)
    if check:
        log(f"config ok: {config_path}")
        return
    require(
        "lsr train",
        "torch",
        "transformers",
        "sentence_transformers",
        "accelerate",
        "datasets",
        "bm25s",
    )
    from lsr.train.trainer import train as run

    result = run(config, progress=log)
    if as_json:
        typer.echo(json.dumps(asdict(result)))
    log(result.summary())
