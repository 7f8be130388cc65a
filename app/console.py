"""The `flare21-predict` console script of `pip install .`: the same as `python -m app predict`."""
from __future__ import annotations

import sys


def console_main() -> int:
    from app.cli import main
    return main(["predict", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(console_main())
