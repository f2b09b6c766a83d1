"""Named fault-injection points for crash tests (``CAREBASE_FAILPOINTS``).

``eventstore.before_commit=sleep:5`` makes the process pause there so a test can SIGKILL it
mid-command. With the setting empty (production) a failpoint costs one dict lookup.
"""

from __future__ import annotations

import asyncio

_points: dict[str, str] = {}


def configure(spec: str) -> None:
    _points.clear()
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = item.partition("=")
        _points[name.strip()] = action.strip()


async def hit(name: str) -> None:
    action = _points.get(name)
    if not action:
        return
    kind, _, arg = action.partition(":")
    if kind == "sleep":
        await asyncio.sleep(float(arg or 1))
    elif kind == "error":
        raise RuntimeError(f"failpoint {name}")
