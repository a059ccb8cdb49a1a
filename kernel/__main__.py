"""`python -m cortex.kernel` is the `cortex` command."""

from .cli import main

main()
