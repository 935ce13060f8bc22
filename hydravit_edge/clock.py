"""The toolkit's one clock for timestamps: UTC, ISO 8601, whole seconds, ``Z`` (``2025-01-01T12:00:00Z``).

Reports, manifests and lookup tables carry these; the Kotlin and Swift report writers use the
same form.  :func:`parse_time` reads them back (and other ISO 8601 forms) to order them.
"""

from __future__ import annotations

import datetime as _dt
from typing import Optional

__all__ = ["utc_now", "parse_time"]


def utc_now() -> str:
    """Now, UTC, ISO 8601 to the second with a ``Z``: ``2025-01-01T12:00:00Z``."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: Optional[str]) -> Optional[_dt.datetime]:
    """An ISO 8601 timestamp as an aware datetime (naive ones taken as UTC); None when absent or unreadable."""
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.timezone.utc)
