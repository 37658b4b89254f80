"""`dncompress prune`: a group of modes whose default is channel pruning, so `prune CFG --ratio 0.7` is
`prune channels CFG --ratio 0.7`; `prune energy`, `prune search` and `prune sensitivity` each take only
their own options. The flags of the one-command prune (`--criterion energy`, `--search`, `--sensitivity`)
are routed to their mode with a one-line note."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import DncompressError
from .common import LazyGroup

# mode -> (module in dncompress.cli, command function); the first is the default
MODES = {
    "channels": ("prune_channels", "channels_command"),
    "energy": ("prune_energy", "energy_command"),
    "search": ("prune_search", "search_command"),
    "sensitivity": ("prune_sensitivity", "sensitivity_command"),
}
DEFAULT_MODE = "channels"
# flags of the one-command prune -> the mode they name now
OLD_FLAGS = {"--search": "search", "--sensitivity": "sensitivity", "--criterion=energy": "energy"}


def route(args: list[str]) -> list[str]:
    """The arguments with the mode first: a mode named first stays; otherwise the mode of an old flag
    (removed, with a note) or the default."""
    if args and args[0] in MODES:
        if Path(args[0]).is_file() or Path(f"{args[0]}.cfg").is_file():
            click.echo(f"note: '{args[0]}' is read as the mode `prune {args[0]}`; for the model file here write "
                       f"./{args[0]} (or `prune {DEFAULT_MODE} {args[0]} ...`)", err=True)
        return args
    end = args.index("--") if "--" in args else len(args)
    head = [f"--criterion={args[i + 1]}" if a == "--criterion" and i + 1 < end else a
            for i, a in enumerate(args[:end])]
    found = [i for i, a in enumerate(head) if a in OLD_FLAGS]
    modes = {OLD_FLAGS[head[i]] for i in found}
    if len(modes) > 1:
        raise DncompressError(f"give one mode: prune {' | prune '.join(sorted(modes))}")
    if not modes:
        return [DEFAULT_MODE] + args
    mode = modes.pop()
    old = head[found[0]].replace("=", " ")
    click.echo(f"note: `prune {old}` is now `dncompress prune {mode} ...` (the old spelling still works)", err=True)
    drop = set(found) | {i + 1 for i in found if args[i] == "--criterion"}
    return [mode] + [a for i, a in enumerate(args) if i not in drop]


class PruneGroup(LazyGroup):
    """Loads a mode's module when it runs; arguments that do not start with a mode go to the default
    (click-default-group's idea, with the old flags routed too)."""

    table = MODES

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, route(list(args)))


class DefaultModeCommand(click.Command):
    """The default mode: usage `prune [channels] ...`, options in titled sections (`sections`: title ->
    parameter names), and the other modes listed after them."""

    def __init__(self, *args, sections: dict[str, list[str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = sections or {}

    def format_usage(self, ctx, formatter):
        parent = ctx.parent.command_path if ctx.parent else "prune"
        formatter.write_usage(f"{parent} [{self.name}]", " ".join(self.collect_usage_pieces(ctx)))

    def format_options(self, ctx, formatter):
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        width = min(30, max(len(r[0]) for r in records.values() if r))    # one column for all sections
        records = {name: (r[0].ljust(width), r[1]) if r else None for name, r in records.items()}
        placed = {name for names in self.sections.values() for name in names}
        for title, names in [*self.sections.items(), ("Other options", [n for n in records if n not in placed])]:
            rows = [records[n] for n in names if records.get(n)]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        group = ctx.parent.command if ctx.parent else None
        if isinstance(group, PruneGroup):
            with formatter.section("Modes (dncompress prune MODE --help)"):
                formatter.write_dl([(name + (" (default)" if name == DEFAULT_MODE else ""),
                                     group.get_command(ctx, name).get_short_help_str(90)) for name in MODES])


@click.group("prune", cls=PruneGroup, short_help="Prune channels (default) or weights; search widths; sensitivity.")
def prune_command():
    """Make a model smaller: modes channels (the default), energy, search, sensitivity."""
