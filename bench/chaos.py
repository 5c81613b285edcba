"""``bench/chaos [--minutes N] [--seed S]``: the soak (``testbed.chaos``) on a bed of its own; its figures as JSON.

Exits 1 when an invariant broke (each one is named in ``violations``).  Needs
root (a private dockerd, and a tmpfs for the state folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench.sandbox import sandbox
from testbed import ManifestRepo, make_ssh_key
from testbed.chaos import soak


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(prog="bench/chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10, help="how long the faults go on (default 10)")
    parser.add_argument("--seed", type=int, default=38, help="the seed of the day's random moments")
    args = parser.parse_args(argv)
    with sandbox() as bed, tempfile.TemporaryDirectory(prefix="dreichor-chaos-") as work:
        base = Path(work)
        figures = soak(
            base / "host",
            engine=bed.engine,
            registry=bed.registry,
            repo=ManifestRepo(base / "manifests"),
            key=make_ssh_key(base / "keys", name="maintainer"),
            images=bed.images,
            minutes=args.minutes,
            seed=args.seed,
        )
    print(json.dumps(figures.as_dict(), indent=2))
    return 1 if figures.violations else 0


if __name__ == "__main__":
    sys.exit(main())
