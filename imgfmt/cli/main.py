"""Entry point of the ``imgfmt`` command.

Exit codes: 0 safe or success, 1 unsafe or a policy violation, 2 usage or I/O error.
Subcommands import their modules lazily so that ``imgfmt inspect`` starts fast.
"""

from __future__ import annotations

import importlib

import click

EXIT_OK = 0
EXIT_UNSAFE = 1
EXIT_ERROR = 2

#: Command name -> "module:attribute" under imgfmt.cli.
_COMMANDS = {
    "convert": "convert:convert_command",
    "inspect": "inspect:inspect_command",
    "image": "image:image_group",
    "store": "store:store_group",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"imgfmt.cli.{module_name}")
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config-file",
    type=click.Path(dir_okay=False),
    envvar="IMGFMT_CONFIG",
    help="Glance-style INI file (default: $IMGFMT_CONFIG, ~/.config/imgfmt/imgfmt.conf, "
    "/etc/imgfmt/imgfmt.conf).",
)
@click.option("-v", "--verbose", count=True, help="Log what is read (-v info, -vv debug).")
@click.version_option(package_name="imgfmt")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, verbose: int) -> None:
    """Inspect, convert and publish virtual-machine disk images safely."""
    if verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO)
    ctx.obj = {"config_file": config_file}


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: click's own handling, with imgfmt's exit codes."""
    from ..errors import ImgfmtError
    from ..signals import Interrupted

    try:
        result = cli.main(args=argv, prog_name="imgfmt", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return EXIT_ERROR
    except ImgfmtError as exc:
        click.echo(f"imgfmt: {exc}", err=True)
        return EXIT_ERROR
    except Interrupted as exc:
        click.echo(f"imgfmt: {exc}; partial output was removed", err=True)
        return 128 + exc.signum
    except (KeyboardInterrupt, click.Abort):
        click.echo("imgfmt: interrupted; partial output was removed", err=True)
        return 130
    return result if isinstance(result, int) else EXIT_OK
