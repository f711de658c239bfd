"""The test suite (docs/testing.md). A package, so mypy checks it like the code."""
