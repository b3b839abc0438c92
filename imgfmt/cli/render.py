"""The one place that prints: tables, JSON and values, OpenStack-client style.

Text taken from images is attacker-controlled, so the rich console is built with markup and
highlighting off, and every string goes through ``report.printable`` before it is shown.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn

import click

from ..report import printable

FORMATS = ("table", "json", "value")


def error(message: str) -> None:
    """A one-line message on stderr."""
    click.echo(f"imgfmt: {printable(message)}", err=True)


def abort(message: str, code: int) -> NoReturn:
    error(message)
    raise SystemExit(code)


def scalar(value: Any) -> str:
    """A value as one escaped line of text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return printable(json.dumps(value, sort_keys=True, default=str))
    return printable(str(value))


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def emit_values(rows: Iterable[Sequence[Any]]) -> None:
    for row in rows:
        click.echo(" ".join(scalar(v) for v in row))


def emit_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(printable(title)) if title else None, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(scalar(v)) for v in row))
    console = Console(markup=False, highlight=False, emoji=False, soft_wrap=False)
    console.print(table)


def select(columns: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The columns named by ``-c`` (all when none), refusing unknown names."""
    if not wanted:
        return list(columns)
    unknown = [c for c in wanted if c not in columns]
    if unknown:
        abort(f"unknown column(s) {', '.join(unknown)}; choose from {', '.join(columns)}", 2)
    return list(wanted)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
