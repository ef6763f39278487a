"""The DataFrame builders behind ``to_pandas()`` (no cluster): every builder this pandas
supports makes the same frame as pandas' public constructor — dtypes, values, NaN, the
key column — for string and integer keys, one row, several, none."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quiver import _response


def cases():
    rng = np.random.default_rng(7)
    for keys in (np.array(["u1"], dtype=object), np.array(["a", "b", "c"], dtype=object),
                 np.array([5, -3, 2**62], dtype=np.int64), np.array([], dtype=object)):
        matrix = rng.uniform(-1e6, 1e6, size=(4, len(keys)))
        if len(keys) > 1:
            matrix[1, 1] = np.nan
        yield keys, matrix


@pytest.mark.parametrize("builder", _response._BUILDERS, ids=lambda b: b.__name__)
def test_builders_match_the_constructor(builder):
    try:
        build = builder(pd)
    except Exception as e:  # noqa: BLE001 - this pandas lacks these internals
        pytest.skip(f"not on pandas {pd.__version__}: {e}")
    columns = ["user", "v:a", "v:b", "v:c", "v:d"]
    for keys, matrix in cases():
        got = build(keys, matrix, pd.RangeIndex(len(keys)), pd.Index(columns))
        want = _response._constructor_frame(pd, keys, matrix.copy(), columns)
        pd.testing.assert_frame_equal(got, want)
        assert got["v:a"].dtype == np.float64 and got["user"].dtype == keys.dtype
        # The frame is usable as any other: a new column, an edit.
        got["extra"] = 1
        if len(keys):
            got.loc[0, "v:b"] = 0.5
            assert got["v:b"].iloc[0] == 0.5


def test_the_supported_builder_is_the_fast_one():
    """On the pandas the test command installs, to_pandas uses the internals builder (a
    silent fall back to the constructor would cost ~150 µs a call)."""
    assert _response._block_api(pd).__qualname__.startswith("_internals_builder.")
