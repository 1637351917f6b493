"""`ctfw`: the command line over the REST API (issue 13, point 6).

client.py talks to the API, parser.py reads the command line, commands.py does each
command, render.py shows the answers as tables. `ctfw --help` lists the exit codes."""

from __future__ import annotations

import os
import sys

from ryu_ctfw.cli.client import Client, CliError, Exit


def main(argv: list[str] | None = None) -> int:
    # Imported here: `from ryu_ctfw.cli import main` stays cheap for the console script.
    from ryu_ctfw.cli.commands import Context
    from ryu_ctfw.cli.parser import build_parser

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return int(e.code or 0) if not isinstance(e.code, str) else Exit.USAGE
    try:
        ctx = Context(Client(args.url, args.token, args.timeout), json=args.json)
        return int(args.func(ctx, args))
    except CliError as e:
        print(f"ctfw: {e}", file=sys.stderr)
        return int(e.code)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # `ctfw flows | head`: the reader left; say nothing more (and not at exit either).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.OK
