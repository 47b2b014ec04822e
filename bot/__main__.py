"""`python -m bot` is `relaygram`."""

from bot.cli import main

raise SystemExit(main())
