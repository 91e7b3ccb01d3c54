"""Reading a hand-written YAML file (the cadence policy, the sites file) so that every
problem can name its line: plain data beside the YAML nodes it came from."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class ClinicLoader(yaml.SafeLoader):
    """YAML 1.1 reads 12:00 as the number 720 (base 60); a clinic's file means a time of day."""


ClinicLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ClinicLoader.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
ClinicLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)$"), list("-+0123456789.")
)


def parse_mapping(
    text: str, source: str, error: Callable[[str], Exception], expected: str
) -> tuple[yaml.Node, dict[str, Any]]:
    """The file's root node and its data, which must be a mapping (``expected`` says what
    it must hold); bad YAML raises ``error`` with ``<source>:<line>: ...``."""
    try:
        loader = ClinicLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise error(f"{source}:{line}: not valid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {type(exc).__name__}") from None
    if root is None or not isinstance(data, dict):
        raise error(f"{source}:1: {expected}")
    return root, data
