"""Argument types and helpers the benchmark subcommands share."""

from __future__ import annotations

import argparse
import re


def parse_duration(text: str) -> float:
    """'60s', '2m', '1.5m', '1m30s', '90' -> seconds (also used by loadtest.soak)."""
    number = r"(\d+(?:\.\d+)?)"
    match = re.fullmatch(rf"\s*(?:{number}h)?\s*(?:{number}m)?\s*(?:{number}s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 2m, 1m30s)")
    hours, minutes, seconds = match.groups()
    total = float(hours or 0) * 3600 + float(minutes or 0) * 60 + float(seconds or 0)
    if total < 1:
        raise argparse.ArgumentTypeError("duration must be at least 1 s")
    return total


def optional_duration(text: str) -> float:
    """A duration, or 0 / 0s for none."""
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text)


def comma_names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """``a,b`` -> ["a", "b"], each one of ``allowed`` (an argparse type)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}"
        )
    return names


def comma_numbers(text: str, what: str, low: float, high: float) -> list[float]:
    """``1,2.5`` -> [1.0, 2.5], each within [low, high] (an argparse type)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}: not a list of numbers: {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise argparse.ArgumentTypeError(f"{what}: each must be between {low:g} and {high:g}")
    return values


def without_options(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """argv minus the given options and their values (machine-specific paths and names)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(option + "=" for option in options)):
            out.append(arg)
    return out


def command_line(argv: list[str] | None, default: list[str], private: tuple[str, ...]) -> str:
    """The command that reproduces a run, as the report prints it."""
    import shlex

    kept = without_options(argv or default, private)
    return "python -m loadtest.bench " + " ".join(shlex.quote(a) for a in kept)
