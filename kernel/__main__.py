"""`python -m cortex.kernel` is the `cortex` command."""

from .sdk.cli import main

main()
