"""Keeps the OpenAPI schemas of the operators' CRDs that the prod overlay uses, so the
overlay validates offline (tests/integration/ops/test_kubernetes.py).

    python -m deploy.k8s.crds.vendor --source "strimzi/strimzi-kafka-operator@1.2.0" CRD.yaml...

reads CustomResourceDefinition files (from the operator's tagged release) and writes one
gzipped JSON per kind and version: deploy/k8s/crds/<group>/<Kind>-<version>.json.gz with the
schema and where it came from. SOURCES.md lists the files in use.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def path_of(group: str, kind: str, version: str) -> Path:
    return HERE / group / f"{kind}-{version}.json.gz"


def load(group: str, kind: str, version: str) -> dict[str, Any]:
    """{"schema": openAPIV3Schema, "source": ...}; KeyError when not vendored."""
    path = path_of(group, kind, version)
    if not path.exists():
        raise KeyError(f"{group}/{version} {kind}")
    loaded: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return loaded


def vendor(crd_file: Path, source: str) -> list[Path]:
    written = []
    for crd in yaml.safe_load_all(crd_file.read_text()):
        if not crd or crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            body = {
                "group": group,
                "kind": kind,
                "version": version["name"],
                "source": f"{source}: {crd_file.name}",
                "schema": version["schema"]["openAPIV3Schema"],
            }
            path = path_of(group, kind, version["name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            # mtime=0: the same CRD always gives the same bytes.
            path.write_bytes(gzip.compress(json.dumps(body, sort_keys=True).encode(), mtime=0))
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="where the files are from (repo@tag)")
    parser.add_argument("crds", nargs="+", type=Path)
    args = parser.parse_args()
    for crd_file in args.crds:
        for path in vendor(crd_file, args.source):
            print(f"wrote {path.relative_to(HERE.parents[2])}")


if __name__ == "__main__":
    main()
