"""`python -m maiffs` is the `maiffs` command."""

from maiffs.cli import main

main()
