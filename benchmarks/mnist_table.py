"""Prints the per-digit AUROC table of the MNIST benchmark runs.

    make benchmark            # trains mnist-0 ... mnist-9, then runs this
    python -m benchmarks.mnist_table artifacts

Reads ``artifacts/mnist-<d>/evaluate/metrics.json`` for each digit that has
one and prints image AUROC, AP and F1 per anomalous digit and their mean.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(artifacts_root: Path) -> list[str]:
    """The markdown rows of the table; digits without a finished run are left out."""
    rows = ["| anomalous digit | image AUROC | image AP | F1 |", "|---|---|---|---|"]
    aurocs = []
    for digit in range(10):
        path = artifacts_root / f"mnist-{digit}" / "evaluate" / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        aurocs.append(m["image_auroc"])
        rows.append(f"| {digit} | {m['image_auroc']:.3f} | {m['image_ap']:.3f} | {m['f1']:.3f} |")
    if aurocs:
        rows.append(f"| mean | {sum(aurocs) / len(aurocs):.3f} | | |")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "artifacts")
    rows = table(root)
    if len(rows) == 2:
        print(f"no mnist-<digit> runs under {root}; run `make benchmark`", file=sys.stderr)
        return 1
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
