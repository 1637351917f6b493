"""`ctfw`: the command line over the REST API (issue 13, point 6). Placeholder."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("ctfw: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
