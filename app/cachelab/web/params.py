"""Validation of everything the app reads from a request.

Each reader returns a typed value or raises :class:`BadRequest` with a reason
the client can act on. Unknown or repeated parameters are refused too, so a
typo (``?itme=3``) is an error rather than a silent default.
"""

from __future__ import annotations

import re

from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest

MAX_ITEM = 9999
ALLOWED = ("item", "cache")
_DIGITS = re.compile(r"[0-9]{1,4}")
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def bad_request(reason: str) -> BadRequest:
    return BadRequest(description=reason)


def check_arguments(args: MultiDict, allowed: tuple[str, ...]) -> None:
    """Refuse unknown and repeated query parameters."""
    for name in args:
        if name not in allowed:
            raise bad_request(
                f"unknown query parameter {name[:40]!r}; allowed: {', '.join(allowed)}"
            )
        if len(args.getlist(name)) > 1:
            raise bad_request(f"query parameter {name!r} given more than once")


def read_lookup_args(args: MultiDict) -> tuple[int, bool]:
    """``item`` (0-9999, default 0) and ``cache=bypass`` (the uncached baseline)."""
    check_arguments(args, ALLOWED)
    raw_item = args.get("item", "0")
    if not _DIGITS.fullmatch(raw_item):
        raise bad_request(f"item must be an integer from 0 to {MAX_ITEM}")
    item = int(raw_item)
    cache = args.get("cache", "")
    if cache not in ("", "bypass"):
        raise bad_request("cache must be 'bypass' (or absent)")
    return item, cache == "bypass"
