"""API 1's name for the plugin author's pytest fixtures, which live in `cortex.kernel.sdk.testing`
(the pytest11 entry point). A conftest that says `pytest_plugins = ["cortex.kernel.testing"]`, or a
test that imports from here, keeps working until plugin API 2; the one import of the SDK the
core allows (tests/test_architecture.py names it)."""

from .sdk.testing import *  # noqa: F403 - the same fixtures and helpers, under the old name
from .sdk.testing import __all__  # noqa: F401
