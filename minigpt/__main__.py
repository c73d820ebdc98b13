"""`python -m minigpt COMMAND ...`: the `minigpt` command (pyproject.toml's [project.scripts]),
for when the package is importable but its script is not on PATH."""
import sys

from minigpt.cli import main

sys.exit(main())
