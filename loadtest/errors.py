"""The one error every benchmark raises when it cannot go on.

``python -m loadtest.bench`` prints it as one line, without a traceback, and
exits 2 (the lab is not running, an option is bad, a load generator failed).
"""

from __future__ import annotations


class BenchError(RuntimeError):
    """The benchmark cannot run: printed without a traceback, exit code 2."""
