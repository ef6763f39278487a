"""Argument normalisation shared by the blocking and the asyncio clients: times, keys,
entity rows and rows to push. Everything here runs before a request is sent, and a bad
argument raises :class:`quiver.errors.InvalidArgument` naming it."""

from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InvalidArgument

Time = Union[int, dt.datetime, str, np.datetime64]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)


def micros(t: Any, what: str = "time") -> int:
    """µs since the Unix epoch of ``t``: an int (already µs), a datetime (naive = UTC), a
    pandas Timestamp, a NumPy datetime64, or ISO 8601 / RFC 3339 text."""
    if isinstance(t, bool):
        raise InvalidArgument(f"{what} is a bool, not a time")
    if isinstance(t, (int, np.integer)):
        return int(t)
    if isinstance(t, np.datetime64):
        if np.isnat(t):
            raise InvalidArgument(f"{what} is NaT")
        return int(t.astype("datetime64[us]").astype(np.int64))
    if isinstance(t, str):
        try:
            t = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument(f"{what} {t!r} is not an ISO 8601 / RFC 3339 time") from None
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        # A pandas Timestamp's nanoseconds are floored to the µs.
        return int((t - _EPOCH) // _US)
    if isinstance(t, dt.date):
        return micros(dt.datetime(t.year, t.month, t.day), what)
    raise InvalidArgument(f"{what} has type {type(t).__name__}; give a datetime, µs or ISO text")


def micros_many(ts: Any, n: int, what: str = "as_of") -> List[int]:
    """One µs time per key from a sequence (list, NumPy array, pandas Series)."""
    arr = np.asarray(ts)
    if arr.ndim != 1 or len(arr) != n:
        raise InvalidArgument(f"{what} has {arr.size} times for {n} keys: give one per key")
    if np.issubdtype(arr.dtype, np.datetime64):
        us = arr.astype("datetime64[us]")
        if np.isnat(us).any():
            raise InvalidArgument(f"{what} has NaT at position {int(np.argmax(np.isnat(us)))}")
        return us.astype(np.int64).tolist()
    out = []
    for i, t in enumerate(ts):
        out.append(micros(t, f"{what}[{i}]"))
    return out


def is_sequence(x: Any) -> bool:
    """Whether ``x`` is a sequence of items (not a str, bytes or a datetime)."""
    if isinstance(x, (str, bytes, dt.datetime, dt.date, np.datetime64)):
        return False
    if isinstance(x, np.ndarray):
        return x.ndim == 1
    return hasattr(x, "__len__") and hasattr(x, "__iter__")


def key_list(keys: Any) -> list:
    """Entity keys as a list of Python str/int (from a list, NumPy array, pandas Series or
    Index)."""
    if keys is None:
        return []
    if isinstance(keys, (str, bytes, int)):
        raise InvalidArgument("keys must be a sequence of keys, e.g. ['u1', 'u2'], not one key")
    if hasattr(keys, "tolist"):
        return list(keys.tolist())
    return list(keys)


def entity_rows_keys(rows: Iterable[dict], entity: Optional[str]) -> list:
    """The keys of Feast-style entity rows (``[{"user": "u1"}, ...]``): one join key per
    row, named after the features' entity when it is known."""
    keys = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or len(row) != 1:
            raise InvalidArgument(
                f"entity_rows[{i}] must be a dict with one join key, e.g. {{{entity or 'user'!r}: 'u1'}}"
            )
        (name, key), = row.items()
        if entity is not None and name != entity:
            raise InvalidArgument(
                f"entity_rows[{i}] has join key {name!r}; these features are keyed by entity {entity!r}"
            )
        keys.append(key)
    return keys


def entity_rows_by_entity(rows: Iterable[dict]) -> "Dict[str, list]":
    """Feast-style entity rows with several join keys (``[{"user": "u1", "merchant": 7}]``,
    features spanning entities) as ``{entity: [keys, one per row]}``; every row names the
    same entities."""
    out: Dict[str, list] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row:
            raise InvalidArgument(f"entity_rows[{i}] must be a dict of join keys, e.g. {{'user': 'u1'}}")
        if i == 0:
            out = {name: [] for name in row}
        elif set(row) != set(out):
            raise InvalidArgument(
                f"entity_rows[{i}] has join keys {sorted(row)}; entity_rows[0] has {sorted(out)}: every row names the same entities"
            )
        for name, key in row.items():
            out[name].append(key)
    return out


def feature_list(features: Any) -> List[str]:
    """Feature references as a list (a single ``"view:feature"`` string is one reference)."""
    if features is None:
        return []
    if isinstance(features, str):
        return [features]
    return [str(f) for f in features]


DEFAULT_EVENT_TIME = "event_timestamp"


def rows_to_push(
    data: Any,
    key_column: str,
    event_time_column: Optional[str],
) -> List[Tuple[Any, int, dict, bool]]:
    """``(key, event_time_micros, {field: value}, False)`` tuples from a pandas DataFrame
    or a list of dicts. Columns other than the key and the event time are fields; without
    ``event_time_column`` a row's ``event_timestamp`` is its event time if it has one."""
    records: Sequence[dict]
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        records = data.to_dict(orient="records")
    elif isinstance(data, dict):
        raise InvalidArgument("push takes a DataFrame or a list of row dicts, not one dict")
    else:
        records = list(data)
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InvalidArgument(f"row {i} is a {type(rec).__name__}, not a dict")
        if key_column not in rec:
            raise InvalidArgument(f"row {i} has no key column {key_column!r}")
        fields = dict(rec)
        key = fields.pop(key_column)
        t = 0
        column = event_time_column
        if column is None and DEFAULT_EVENT_TIME in fields:
            column = DEFAULT_EVENT_TIME
        if column is not None:
            if column not in fields:
                raise InvalidArgument(f"row {i} has no event time column {column!r}")
            t = micros(fields.pop(column), f"row {i} {column}")
        out.append((key, t, fields, False))
    return out
