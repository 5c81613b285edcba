"""Completes the SBOM scripts/build writes with cyclonedx-py: the wheel it describes, and the dependency graph.

cyclonedx-py reads requirements.txt, which has every package of the runtime closure with its version and
hashes but not who needs whom: the graph comes from uv.lock, and the root component (the controller) gets
the wheel's SHA-256 and its direct dependencies. Usage: sbom.py SBOM UV_LOCK WHEEL (the SBOM is rewritten).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path


def canonical(name: str) -> str:
    """A package name as the index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main(sbom_path: Path, lock_path: Path, wheel: Path) -> None:
    sbom = json.loads(sbom_path.read_text())
    lock = tomllib.loads(lock_path.read_text())
    refs = {canonical(c["name"]): c["bom-ref"] for c in sbom["components"]}
    root = sbom["metadata"]["component"]
    root["hashes"] = [{"alg": "SHA-256", "content": hashlib.sha256(wheel.read_bytes()).hexdigest()}]
    root["purl"] = f"pkg:pypi/{canonical(root['name'])}@{root['version']}?file_name={wheel.name}"
    graph = []
    for package in lock["package"]:
        name = canonical(package["name"])
        ref = root["bom-ref"] if name == canonical(root["name"]) else refs.get(name)
        if ref is None:  # a dev package: not in the runtime closure
            continue
        names = {canonical(d["name"]) for d in package.get("dependencies", [])}
        needs = sorted(refs[n] for n in names if n in refs)
        graph.append({"ref": ref, "dependsOn": needs})
    sbom["dependencies"] = sorted(graph, key=lambda node: node["ref"])
    sbom_path.write_text(json.dumps(sbom, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
