"""Writes the JSON Schema of every topic's model under schemas/json (``make schemas``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.topics import CATALOGUE, TopicSpec

JSON_DIR = Path(__file__).parent / "json"


def schema_of(spec: TopicSpec) -> dict[str, object]:
    schema = spec.model.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://followup.example/schemas/{spec.name}.schema.json",
        "x-topic": spec.name,
        "x-compacted": spec.compacted,
        "x-key": "patient_id",
        **schema,
        "description": spec.description,
    }


def rendered(spec: TopicSpec) -> str:
    return json.dumps(schema_of(spec), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def path_of(spec: TopicSpec) -> Path:
    return JSON_DIR / f"{spec.name}.schema.json"


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for spec in CATALOGUE:
        path_of(spec).write_text(rendered(spec), encoding="utf-8")
        print(f"wrote {path_of(spec).relative_to(Path.cwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
