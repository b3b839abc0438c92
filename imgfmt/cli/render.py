"""The one place that prints: tables, JSON and values, OpenStack-client style.

Text taken from images is attacker-controlled, so every string goes through
``report.printable`` before it is shown, and the rich console used for progress bars is built
with markup and highlighting off. Tables are drawn here rather than with rich: rich's import
alone costs more than a whole ``imgfmt inspect``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import click

from ..report import printable

FORMATS = ("table", "json", "value")
Command = TypeVar("Command", bound=Callable[..., Any])
#: Narrowest a column is folded to when a table must fit the terminal.
MIN_COLUMN = 8
#: Widest a column grows, on a terminal or not: a wider cell folds, so that the other rows
#: are not padded to its width (an OVA's list of 2000 files made every row 94 KB wide).
MAX_COLUMN = 1024


def format_option(f: Command) -> Command:
    """``-f/--format table|json|value``, as in the OpenStack client."""
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(f)


def column_option(
    help: str = "Show only this column (repeatable).",
) -> Callable[[Command], Command]:
    """``-c/--column NAME``, repeatable."""
    return click.option("-c", "--column", "columns", multiple=True, metavar="COLUMN", help=help)


def output_options(f: Command) -> Command:
    """Both ``-f`` and ``-c``."""
    return format_option(column_option()(f))


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
        import json  # here: most values are plain, and the import costs a millisecond

        return printable(json.dumps(value, sort_keys=True, default=str))
    return printable(str(value))


def emit_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def emit_values(rows: Iterable[Sequence[Any]]) -> None:
    for row in rows:
        click.echo(" ".join(scalar(v) for v in row))


def emit_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> None:
    """An ASCII table as the OpenStack client draws it; cells fold to fit a terminal, and at
    ``MAX_COLUMN`` characters anywhere."""
    header = [printable(c) for c in columns]
    cells = [[scalar(v) for v in row] for row in rows]
    widths = [
        min(MAX_COLUMN, max([len(h)] + [len(r[i]) for r in cells])) for i, h in enumerate(header)
    ]
    if stdout_is_terminal():
        import shutil  # only for a terminal: it imports the bz2 and lzma modules

        widths = _fit(widths, shutil.get_terminal_size().columns)
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [printable(title)] if title else []
    lines += [border, *_row(header, widths), border]
    for row in cells:
        lines += _row(row, widths)
    lines.append(border)
    click.echo("\n".join(lines))


def _fit(widths: list[int], total: int) -> list[int]:
    """Narrow the widest columns until the table fits ``total`` characters (if it can)."""
    widths = list(widths)
    budget = total - (3 * len(widths) + 1)
    while sum(widths) > budget:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= MIN_COLUMN:
            break
        widths[widest] -= 1
    return widths


def _row(cells: Sequence[str], widths: Sequence[int]) -> list[str]:
    folded = [
        [c[i : i + w] for i in range(0, max(len(c), 1), w)] or [""]
        for c, w in zip(cells, widths, strict=True)
    ]
    height = max(len(f) for f in folded)
    return [
        "| "
        + " | ".join(
            (f[n] if n < len(f) else "").ljust(w) for f, w in zip(folded, widths, strict=True)
        )
        + " |"
        for n in range(height)
    ]


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
