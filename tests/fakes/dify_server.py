"""`FakeDify` over real HTTP: the Dify case of `tests.fakes.serve`, kept under its old name.

    python -m tests.fakes.dify_server --port 5001 --api-key app-test

is `python -m tests.fakes.serve dify --port 5001 --key app-test` (see tests/fakes/serve.py for
every platform and option); `make_app(fake)` serves any fake, FakeDify included.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tests.fakes.serve import main as serve_main
from tests.fakes.serve import make_app

__all__ = ["main", "make_app"]


def main(argv: Sequence[str] | None = None) -> None:
    serve_main(["dify", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
