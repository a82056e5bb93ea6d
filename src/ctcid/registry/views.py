"""The registry on the terminal: the gate's decision and the version list (one-screen tables), and
the lines ``ctcid register`` and ``ctcid rollback`` print."""

from __future__ import annotations

from rich import box
from rich.table import Table

from ctcid.registry.promote import Decision
from ctcid.registry.register import Registration
from ctcid.registry.store import Registry
from ctcid.registry_client import CHALLENGER, CHAMPION

_VERDICT_STYLE = {"pass": "green", "FAIL": "bold red", "-": "dim"}


def decision_table(decision: Decision) -> Table:
    """Each criterion, both models' values on the current test set, and the verdict."""
    champion = f"champion v{decision.champion_before}" if decision.champion_before else "champion (none)"
    table = Table(
        title=f"{decision.model_name}: challenger v{decision.challenger} against {champion}",
        caption=_caption(decision),
    )
    table.add_column("criterion")
    table.add_column(f"challenger v{decision.challenger}", justify="right")
    table.add_column(champion, justify="right")
    table.add_column("verdict", justify="center")
    for criterion in decision.criteria:
        style = _VERDICT_STYLE[criterion.verdict]
        table.add_row(
            criterion.name,
            _cell(criterion.challenger),
            _cell(criterion.champion),
            f"[{style}]{criterion.verdict}[/{style}]",
        )
    return table


def registration_line(done: Registration) -> str:
    """The version the selected backbone became (or already was), and its training run."""
    verb = "already registered as" if done.reused else "registered"
    return (
        f"{done.backbone} {verb} {done.model_name} version {done.version} (alias challenger; "
        f"run {done.run_id}); see 'ctcid models'"
    )


def rollback_line(decision: Decision) -> str:
    return (
        f"{decision.model_name}: champion v{decision.champion_before} -> "
        f"v{decision.champion_after} (rolled back)"
    )


def _caption(decision: Decision) -> str:
    if decision.action == "promoted":
        return f"PROMOTED: champion is now v{decision.champion_after}"
    if decision.action == "forced":
        return f"FORCED past the gate by {decision.by}: {decision.reason}"
    if decision.action == "refused":
        kept = f"v{decision.champion_before}" if decision.champion_before else "none"
        return f"REFUSED ({'; '.join(decision.failed)}); champion stays {kept}"
    if decision.action == "rolled_back":
        return f"ROLLED BACK: champion v{decision.champion_before} -> v{decision.champion_after}"
    return f"nothing to do: v{decision.challenger} is already champion"


def versions_table(registry: Registry, limit: int = 20) -> Table:
    """Registered versions, newest first: aliases, backbone, key test metrics, data hash, decision.

    Compact enough for an 80-column terminal (aliases stacked, short hashes); dates and the rest
    are in the MLflow UI.
    """
    aliases = registry.aliases()
    table = Table(
        title=f"{registry.name} at {registry.uri}",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )
    for column, justify in [
        ("v", "right"),
        ("aliases", "left"),
        ("backbone", "left"),
        ("AUC", "right"),
        ("sens", "right"),
        ("spec", "right"),
        ("MAE/pt", "right"),
        ("raw md5", "left"),
        ("decision", "left"),
    ]:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for version in registry.versions()[:limit]:
        tags = version.tags
        names = sorted(aliases.get(str(version.version), []), key=lambda a: (a != CHAMPION, a))
        marked = "\n".join(
            f"[bold green]{a}[/]" if a == CHAMPION else f"[yellow]{a}[/]" if a == CHALLENGER else a
            for a in names
        )
        table.add_row(
            str(version.version),
            marked,
            tags.get("backbone", "?"),
            _short(tags.get("test.auc")),
            _short(tags.get("test.sensitivity")),
            _short(tags.get("test.specificity")),
            _short(tags.get("test.patient_mae")),
            tags.get("dvc.md5.data/raw", "-")[:8],
            tags.get("promotion.decision", "-"),
        )
    return table


def _short(value: str | None) -> str:
    try:
        return f"{float(value):.3f}" if value is not None else "-"
    except ValueError:
        return value or "-"


def _cell(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3f}"
    return str(value)
