"""Hypothesis strategies: real FHIR JSON with a few elements replaced, removed or added."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(
        ["Patient/p-1", "2026-03-02", "2026-03-02T09:30:00+02:00", "booked", "", "Bundle", "x"]
    ),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One of ``samples`` with a few elements replaced, removed or added."""
    body: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(body)[1:]))
        parent: Any = body
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12))] = draw(JSON_VALUE)
        else:
            parent[path[-1]] = draw(JSON_VALUE)
        if path[0] == "resourceType":
            break  # the structure above no longer exists
    return body
