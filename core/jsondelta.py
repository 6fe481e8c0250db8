"""Small differences between two JSON-like values, so a growing state can be journaled at the cost of its change.

A controller's state holds lists that only grow (its history, the scores it has seen); writing the whole state
after every trial costs time in proportion to the run's length. `delta(old, new)` records only what changed:
a dict's changed keys, a list's appended tail, any other changed value whole; `apply(old, d)` rebuilds `new`.
Values are compared as they are (a tuple is not equal to a list), so give both sides from the same producer.
"""
from __future__ import annotations

from typing import Any

SAME = None   # the delta of two equal values


def delta(old: Any, new: Any) -> dict[str, Any] | None:
    """What turns `old` into `new`: None when equal, else one of ``{"d": {key: delta}, "x": [removed keys]}``
    (dicts), ``{"a": tail}`` (a list that grew by `tail`), ``{"v": new}`` (anything else)."""
    if type(old) is type(new) and old == new:
        return SAME
    if isinstance(old, dict) and isinstance(new, dict):
        changed = {}
        for key, value in new.items():
            if key not in old:
                changed[key] = {"v": value}
            elif (sub := delta(old[key], value)) is not SAME:
                changed[key] = sub
        out: dict[str, Any] = {"d": changed}
        removed = [key for key in old if key not in new]
        if removed:
            out["x"] = removed
        return out
    if isinstance(old, list) and isinstance(new, list) and len(new) > len(old) and new[:len(old)] == old:
        return {"a": new[len(old):]}
    return {"v": new}


def apply(old: Any, d: dict[str, Any] | None, inplace: bool = False) -> Any:
    """`old` changed by `d` (a `delta`).

    Args:
        inplace: change `old`'s dicts and lists in place (cost: the size of `d`, not of `old`); otherwise `old`
            is left as it was and the result shares its unchanged parts.
    """
    if d is SAME:
        return old
    if "v" in d:
        return d["v"]
    if "a" in d:
        if inplace:
            old.extend(d["a"])
            return old
        return [*old, *d["a"]]
    out = old if inplace else dict(old)
    for key in d.get("x", ()):
        out.pop(key, None)
    for key, sub in d["d"].items():
        out[key] = sub["v"] if "v" in sub else apply(out[key], sub, inplace)
    return out
