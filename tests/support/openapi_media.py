"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.support.openapi_media``): the node's binary
body forms, which JSON Schema cannot describe, drawn as valid bodies of their documented
layouts and encoded by the client's own encoders (``dvecdb_client.bulk``, ``.querybody``).

The node under test takes vectors of one dimension (``DVECDB_MAX_DIMENSION=1``), so every
body drawn here fits every collection the run creates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import schemathesis
from hypothesis import strategies as st

from dvecdb_client import bulk, querybody

DIMENSION = 1
_IDS = st.text(min_size=1, max_size=40)
_FLOATS = st.floats(min_value=-(2.0**100), max_value=2.0**100, width=32)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
_METADATA = st.none() | st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3)


def _matrix(rows: list[float]) -> Any:
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), DIMENSION)


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    count = draw(st.integers(min_value=1, max_value=5))
    ids = draw(st.lists(_IDS, min_size=count, max_size=count))
    rows = draw(st.lists(_FLOATS, min_size=count, max_size=count))
    metadata = draw(st.none() | st.lists(_METADATA, min_size=count, max_size=count))
    return bulk.encode_batch(ids, _matrix(rows), metadata)


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    rows = draw(st.lists(_FLOATS, min_size=1, max_size=4))
    options = draw(
        st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "k": st.integers(min_value=1, max_value=20),
                "include_metadata": st.booleans(),
                "filter": st.dictionaries(st.text(min_size=1, max_size=8), _SCALARS, max_size=2),
            },
        )
    )
    return querybody.encode_queries(_matrix(rows), options)


schemathesis.openapi.media_type(bulk.CONTENT_TYPE, batches())
schemathesis.openapi.media_type(querybody.CONTENT_TYPE, queries())
