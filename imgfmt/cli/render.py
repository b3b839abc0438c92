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
#: Table width when stdout is not a terminal: wide enough for a sha512 hex digest row.
PIPE_WIDTH = 250


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
    width = None if stdout_is_terminal() else PIPE_WIDTH
    console = Console(markup=False, highlight=False, emoji=False, soft_wrap=False, width=width)
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


class Progress:
    """Byte progress: a rich bar on a terminal, a line per 10% otherwise, nothing if quiet.

    Use as a context manager; call the instance with the bytes done so far.
    """

    def __init__(self, label: str, total: int | None, enabled: bool = True) -> None:
        self.label = printable(label)
        self.total = total
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None
        self._next_report = 10

    def __enter__(self) -> Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as Bar

            console = Console(stderr=True, markup=False, highlight=False)
            self._bar = Bar(
                "{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        elif self.total:
            percent = done * 100 // self.total
            if percent >= self._next_report:
                click.echo(f"{self.label}: {percent}% ({done}/{self.total} bytes)", err=True)
                self._next_report = percent - percent % 10 + 10

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
