"""Online lookup results: Arrow, pandas, NumPy and dicts from the wire's packed columns.

The native module hands over each column as raw little-endian buffers (values, string
offsets and bytes, list offsets, a validity byte and a status byte per row). Numeric,
string and list columns become Arrow arrays over those buffers directly
(``pyarrow.Array.from_buffers``) and NumPy arrays through ``numpy.frombuffer``: no Python
object is made per value unless a caller asks for Python values (``to_dict``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

STATUS_NAMES = np.array(["UNSPECIFIED", "PRESENT", "NOT_FOUND", "EXPIRED"], dtype=object)

_PRIMITIVE = {
    "int64": (pa.int64(), np.int64),
    "float64": (pa.float64(), np.float64),
}
_LIST_ITEM = {"int64_list": pa.int64(), "float64_list": pa.float64()}


def _bitmap(valid: np.ndarray) -> Optional[pa.Buffer]:
    """Arrow's validity bitmap of ``valid`` (None when every row holds a value)."""
    if valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _offsets(raw: bytes, blob_len: int) -> tuple:
    """Arrow offsets from the wire's u32 offsets: int32, or int64 (large) past 2 GiB."""
    if blob_len < 2**31:
        return pa.py_buffer(raw), False
    return pa.py_buffer(np.frombuffer(raw, dtype="<u4").astype("<i8")), True


def _strings(offsets: bytes, blob: bytes, n: int, bitmap, binary: bool) -> pa.Array:
    buf, large = _offsets(offsets, len(blob))
    if binary:
        ty = pa.large_binary() if large else pa.binary()
    else:
        ty = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(ty, n, [bitmap, buf, pa.py_buffer(blob)])


def arrow_column(c: Dict[str, Any]) -> pa.Array:
    """One wire column as an Arrow array (null where not PRESENT or null)."""
    valid = np.frombuffer(c["valid"], dtype=np.uint8).astype(bool)
    n = len(valid)
    bitmap = _bitmap(valid)
    t = c["type"]
    if t in _PRIMITIVE:
        return pa.Array.from_buffers(_PRIMITIVE[t][0], n, [bitmap, pa.py_buffer(c["values"])])
    if t == "bool":
        values = np.frombuffer(c["values"], dtype=np.uint8).astype(bool)
        return pa.array(values, type=pa.bool_(), mask=~valid)
    if t in ("string", "bytes"):
        return _strings(c["offsets"], c["blob"], n, bitmap, binary=t == "bytes")
    if t == "float32_vector":
        floats = np.frombuffer(c["values"], dtype="<f4")
        child = pa.array(floats, type=pa.float32())
        d = c["dimension"]
        if d:
            return pa.FixedSizeListArray.from_arrays(child, d, mask=pa.array(~valid))
        return pa.Array.from_buffers(
            pa.list_(pa.float32()), n, [bitmap, pa.py_buffer(c["list_offsets"])], children=[child]
        )
    if t in _LIST_ITEM:
        item = _LIST_ITEM[t]
        child = pa.Array.from_buffers(item, len(c["values"]) // 8, [None, pa.py_buffer(c["values"])])
        return pa.Array.from_buffers(
            pa.list_(item), n, [bitmap, pa.py_buffer(c["list_offsets"])], children=[child]
        )
    if t == "string_list":
        items = len(c["offsets"]) // 4 - 1
        child = _strings(c["offsets"], c["blob"], items, None, binary=False)
        return pa.Array.from_buffers(
            pa.list_(child.type), n, [bitmap, pa.py_buffer(c["list_offsets"])], children=[child]
        )
    raise TypeError(f"column {c['name']!r} has unknown type {t!r}")


def pandas_types(nullable: bool):
    """The ``types_mapper`` of ``pyarrow.Table.to_pandas``: pandas' nullable dtypes."""
    if not nullable:
        return None
    import pandas as pd

    mapping = {
        pa.int64(): pd.Int64Dtype(),
        pa.float64(): pd.Float64Dtype(),
        pa.bool_(): pd.BooleanDtype(),
        pa.string(): pd.StringDtype(),
        pa.large_string(): pd.StringDtype(),
    }
    return mapping.get


_INDEXES: Dict[Any, Any] = {}
_BLOCK_API: Any = None  # resolved on first use: a frame builder, or False


def _reused_index(key: Any, make: Callable[[], Any]):
    """The pandas Index cached under ``key`` (made by ``make`` on a miss): Indexes are
    immutable, and building one costs more than the rest of a small frame. Bounded: the
    cache is emptied when it reaches 512 entries."""
    idx = _INDEXES.get(key)
    if idx is None:
        if len(_INDEXES) >= 512:
            _INDEXES.clear()
        idx = _INDEXES[key] = make()
    return idx


def _column_index(pd, columns: List[str]):
    """The pandas Index of ``columns``, reused across calls asking for the same features."""
    return _reused_index(tuple(columns), lambda: pd.Index(columns))


def _internals_builder(pd):
    """A frame builder on the internal constructors pandas' own ``concat`` uses (~5 µs for
    a 50-column frame); raises where this pandas has other internals."""
    from pandas._libs.internals import BlockPlacement
    from pandas.core.internals import BlockManager
    from pandas.core.internals.blocks import new_block

    def frame(keys, matrix, index, cols):
        blocks = (new_block(keys.reshape(1, -1), BlockPlacement(slice(0, 1)), ndim=2),
                  new_block(matrix, BlockPlacement(slice(1, len(cols))), ndim=2))
        # The blocks and axes are consistent by construction: skip the re-check.
        mgr = BlockManager(blocks, [cols, index], verify_integrity=False)
        return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)

    return frame


def _make_block_builder(pd):
    """A frame builder on the block API pyarrow uses (pandas 3: its public one)."""
    from pandas.core.internals.api import make_block

    try:
        from pandas.api.internals import create_dataframe_from_blocks

        def build(blocks, index, cols):
            return create_dataframe_from_blocks(blocks, index=index, columns=cols)
    except ImportError:
        from pandas.core.internals import BlockManager

        def build(blocks, index, cols):
            mgr = BlockManager(tuple(blocks), [cols, index])
            return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)

    def frame(keys, matrix, index, cols):
        blocks = [make_block(keys.reshape(1, -1), placement=[0]),
                  make_block(matrix, placement=slice(1, len(cols)))]
        return build(blocks, index, cols)

    return frame


def _constructor_frame(pd, keys, matrix, columns):
    """The same frame through pandas' public constructor (~150 µs for 50 columns)."""
    df = pd.DataFrame(matrix.T, columns=columns[1:], copy=False)
    df.insert(0, columns[0], keys)
    return df


_BUILDERS = (_internals_builder, _make_block_builder)


def _block_api(pd):
    """The first frame builder this pandas supports, or False. Resolved once: a failed
    import costs a file-system search."""
    global _BLOCK_API
    if _BLOCK_API is None:
        _BLOCK_API = False
        for builder in _BUILDERS:
            try:
                _BLOCK_API = builder(pd)
                break
            except Exception:  # noqa: BLE001 - a pandas with other internals
                continue
    return _BLOCK_API


def _range_index(pd, n: int):
    """``pd.RangeIndex(n)``, reused for the row counts seen."""
    return _reused_index(n, lambda: pd.RangeIndex(n))


def _frame(pd, keys: np.ndarray, matrix: np.ndarray, columns: List[str]):
    """A DataFrame of a key column and a float64 ``matrix`` (features × rows) as two
    blocks, built directly (~5 µs; the DataFrame constructor plus ``insert`` take ~150 µs
    for 50 columns). Falls back to the public constructor if this pandas lacks the
    block internals, or they fail."""
    global _BLOCK_API
    build = _block_api(pd)
    if build:
        try:
            return build(keys, matrix, _range_index(pd, matrix.shape[1]), _column_index(pd, columns))
        except Exception:  # noqa: BLE001 - never again on this pandas
            _BLOCK_API = False
    return _constructor_frame(pd, keys, matrix, columns)


class OnlineResponse:
    """The answer of one ``get_online_features`` call: one row per requested entity key
    (in request order, duplicates included) and one column per feature (``view:feature``).

    A value is *missing* (null) where its status is not ``PRESENT`` (``NOT_FOUND``: no row
    for the key; ``EXPIRED``: older than the view's TTL) or where the row holds a null.
    """

    def __init__(
        self,
        native: Any,
        keys: Sequence[Any],
        key_name: str,
        more_keys: Sequence[Tuple[str, Sequence[Any]]] = (),
    ) -> None:
        self._native = native
        self._keys = keys
        self._key_name = key_name
        # Further entities' key columns (features spanning entities), in row order.
        self._more_keys = list(more_keys)
        self._cols: Optional[List[Dict[str, Any]]] = None

    @property
    def _columns(self) -> List[Dict[str, Any]]:
        # Read from the native result on first use (an all-float to_pandas never needs it).
        if self._cols is None:
            self._cols = self._native.columns()
            self._by_name = {c["name"]: c for c in self._cols}
        return self._cols

    def __len__(self) -> int:
        return self._native.row_count

    def __repr__(self) -> str:
        return f"OnlineResponse(rows={len(self)}, features={self.feature_names})"

    @property
    def feature_names(self) -> List[str]:
        """Feature columns in request order (``view:feature``)."""
        return self._native.feature_names

    @property
    def watermark(self) -> str:
        """Watermark token of the shards that answered: pass it as ``min_watermarks`` to
        another client to read at least this state."""
        return self._native.watermark

    def _column(self, feature: str) -> Dict[str, Any]:
        try:
            self._columns
            return self._by_name[feature]
        except KeyError:
            from .errors import NotFound

            raise NotFound(
                f"the response has no feature {feature!r}; it has {self.feature_names}"
            ) from None

    def statuses(self, feature: str) -> np.ndarray:
        """Each row's status of ``feature``: ``"PRESENT"``, ``"NOT_FOUND"`` or ``"EXPIRED"``."""
        codes = np.frombuffer(self._column(feature)["statuses"], dtype=np.uint8)
        return STATUS_NAMES[np.minimum(codes, len(STATUS_NAMES) - 1)]

    def valid(self, feature: str) -> np.ndarray:
        """Whether each row holds a value of ``feature`` (PRESENT and not null)."""
        return np.frombuffer(self._column(feature)["valid"], dtype=np.uint8).astype(bool)

    def event_times(self, feature: str) -> np.ndarray:
        """Each row's event time of ``feature`` as ``datetime64[us]`` (NaT where missing).
        Needs ``event_times=True`` on the lookup."""
        c = self._column(feature)
        if "event_times" not in c:
            from .errors import InvalidArgument

            raise InvalidArgument("event times were not requested: pass event_times=True")
        micros = np.frombuffer(c["event_times"], dtype="<i8")
        out = micros.astype("datetime64[us]")
        out[micros == 0] = np.datetime64("NaT")
        return out

    def _key_array(self) -> pa.Array:
        return pa.array(list(self._keys))

    def to_arrow(self, *, include_statuses: bool = False, include_event_times: bool = False) -> pa.Table:
        """The response as a ``pyarrow.Table``: the entity key column, then one typed column
        per feature (nulls where missing); optionally ``<feature>__status`` and
        ``<feature>__event_time`` columns."""
        names, arrays = [self._key_name], [self._key_array()]
        for name, keys in self._more_keys:
            names.append(name)
            arrays.append(pa.array(list(keys)))
        for c in self._columns:
            names.append(c["name"])
            arrays.append(arrow_column(c))
            if include_statuses:
                names.append(c["name"] + "__status")
                arrays.append(pa.array(self.statuses(c["name"]), type=pa.string()))
            if include_event_times:
                names.append(c["name"] + "__event_time")
                arrays.append(pa.array(self.event_times(c["name"]), type=pa.timestamp("us", tz="UTC")))
        return pa.Table.from_arrays(arrays, names=names)

    def _numpy_column(self, c: Dict[str, Any]) -> np.ndarray:
        """A column as pandas stores it without extension dtypes: float64 (NaN where
        missing); int64 and bool as such when no value is missing, else float64 (NaN) and
        object (None); everything else an object array (None where missing)."""
        valid = np.frombuffer(c["valid"], dtype=np.uint8).view(bool)
        t = c["type"]
        if t == "float64":
            out = np.frombuffer(c["values"], dtype="<f8").copy()
            out[~valid] = np.nan
            return out
        if t == "int64":
            v = np.frombuffer(c["values"], dtype="<i8")
            if valid.all():
                return v.copy()
            out = v.astype(np.float64)
            out[~valid] = np.nan
            return out
        if t == "bool":
            v = np.frombuffer(c["values"], dtype=np.uint8).astype(bool)
            if valid.all():
                return v
            out = v.astype(object)
            out[~valid] = None
            return out
        return arrow_column(c).to_numpy(zero_copy_only=False)

    def to_pandas(
        self,
        *,
        nullable: bool = False,
        include_statuses: bool = False,
        include_event_times: bool = False,
    ):
        """The response as a pandas DataFrame: the entity key column, then one column per
        feature (as :meth:`to_arrow`).

        By default columns have NumPy dtypes, as Feast's ``to_df``: ``float64`` with NaN
        where missing; ``int64`` and ``bool`` keep their dtype when no value is missing
        (else ``float64`` with NaN, and ``object`` with None); strings, bytes, vectors and
        lists are ``object`` columns (None where missing). With ``nullable=True`` every
        column keeps its type and missing values are ``pd.NA`` (``Int64``, ``Float64``,
        ``boolean``, ``string`` extension dtypes) — exact, and slower to build.
        """
        import pandas as pd

        if nullable or include_statuses or include_event_times or self._more_keys:
            table = self.to_arrow(include_statuses=include_statuses, include_event_times=include_event_times)
            return table.to_pandas(types_mapper=pandas_types(nullable))
        names = self.feature_names
        keys = np.array(list(self._keys), dtype=object if not self._keys or isinstance(self._keys[0], str) else None)
        block = self._native.float_block()
        if block is not None:
            # All float64 (the common model input): the native side wrote one column-major
            # matrix with NaN where missing; pandas takes it as one block, uncopied.
            matrix = np.frombuffer(block, dtype="<f8").reshape(len(names), len(self))
            return _frame(pd, keys, matrix, [self._key_name] + names)
        arrays = [self._numpy_column(c) for c in self._columns]
        return pd.DataFrame({self._key_name: keys, **dict(zip(names, arrays))}, copy=False)

    def to_df(self, **kwargs: Any):
        """Feast's name for :meth:`to_pandas`."""
        return self.to_pandas(**kwargs)

    def to_dict(self) -> Dict[str, list]:
        """``{column: [python values]}``: the key column and each feature (None where
        missing), as Feast's ``to_dict``."""
        return self.to_arrow().to_pydict()

    def to_numpy(self, feature: str, *, fill: Any = None) -> np.ndarray:
        """One feature's values as a NumPy array, ready for a model.

        ``float64``: float64 with NaN where missing. ``int64`` and ``bool``: their own
        dtype when every row holds a value (or ``fill`` is given, which replaces missing
        values), else float64 with NaN. ``float32_vector`` of one dimension d: a rows × d
        float32 matrix (NaN rows where missing, or ``fill``). Other types: an object array
        (None where missing, or ``fill``).
        """
        c = self._column(feature)
        valid = self.valid(feature)
        t = c["type"]
        if t in ("int64", "float64", "bool"):
            dtype = {"int64": "<i8", "float64": "<f8", "bool": np.uint8}[t]
            values = np.frombuffer(c["values"], dtype=dtype)
            if t == "bool":
                values = values.astype(bool)
            if valid.all() or (fill is not None and t != "float64"):
                out = values.copy()
                if fill is not None:
                    out[~valid] = fill
                return out
            out = values.astype(np.float64)
            out[~valid] = np.nan if fill is None else fill
            return out
        if t == "float32_vector" and c["dimension"]:
            d = c["dimension"]
            out = np.frombuffer(c["values"], dtype="<f4").reshape(-1, d).copy()
            out[~valid] = np.nan if fill is None else fill
            return out
        values = arrow_column(c).to_numpy(zero_copy_only=False)
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = v if valid[i] else fill
        return out
