"""`python -m chinwag` entry point."""

from chinwag.cli import main

raise SystemExit(main())
