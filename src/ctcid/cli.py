"""The ``ctcid`` command: one subcommand per pipeline step, each a thin call into its module.

The CLI parses arguments, loads params once through :mod:`ctcid.config` and hands typed values
to the step. Errors the user can fix (:class:`CtcidError`, :class:`ConfigError`) are printed as one
message with exit status 1 (2 for configuration), never as a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ctcid.config import DEFAULT_PARAMS, ConfigError, Params, load_params
from ctcid.errors import CtcidError

# Offline hygiene: no telemetry from the tools we drive, whoever calls us.
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

app = typer.Typer(
    help="Find and count circulating tumour cells (CTCs) in imFISH images of blood.\n\n"
    "Each subcommand is one step of the DVC pipeline (see dvc.yaml); run 'dvc repro' to run them all.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

ParamsOption = Annotated[
    Path,
    typer.Option("--params", "-p", help="Configuration file (see docs/configuration.md).", show_default=True),
]

F = TypeVar("F", bound=Callable[..., Any])


def read_params(path: Path = DEFAULT_PARAMS) -> Params:
    try:
        return load_params(path)
    except ConfigError as error:
        console.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
        raise typer.Exit(2) from None


def reports_errors(func: F) -> F:
    """Turn a CtcidError into a one-line message and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CtcidError as error:
            console.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command("show-params")
def show_params(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Validate a params file and print the full configuration, defaults filled in."""
    import yaml

    config = read_params(params)
    typer.echo(yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False))


# Step subcommands follow, one per pipeline stage, in pipeline order.
