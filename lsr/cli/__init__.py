"""The ``lsr`` command line: one Typer sub-app per command group, no library logic here.

``lsr index build|info|repair`` (:mod:`lsr.cli.index_cmd`), ``lsr search``
(:mod:`lsr.cli.search_cmd`), ``lsr eval beir`` (:mod:`lsr.cli.eval_cmd`),
``lsr collection create|add|delete|search|info|compact`` (:mod:`lsr.cli.collection_cmd`),
``lsr serve``, ``lsr train`` and ``lsr teachers`` (:mod:`lsr.cli.teachers_cmd`).
Heavy libraries (Numba, torch) are imported by the commands that need them, so ``lsr --help``
stays fast.
"""

from __future__ import annotations

import typer

from lsr.cli import (
    collection_cmd,
    eval_cmd,
    index_cmd,
    search_cmd,
    serve_cmd,
    teachers_cmd,
    train_cmd,
)

app = typer.Typer(help="lsr: learned sparse retrieval.", no_args_is_help=True, add_completion=False)
app.add_typer(index_cmd.app, name="index")
app.command("search")(search_cmd.search)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(collection_cmd.app, name="collection")
app.command("serve")(serve_cmd.serve)
app.command("train")(train_cmd.train)
app.command("teachers")(teachers_cmd.teachers)

__all__ = ["app"]
