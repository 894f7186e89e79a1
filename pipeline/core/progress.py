"""A small progress display for long loops (ingest, preprocess).

    for item in progress(items, total=len(items), label="[ingest] checked"):
        ...

On a terminal it redraws one line; in a log (CI, make output piped) it prints
a line every 10%, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, label: str, stream=None) -> Iterator[T]:
    """Yields ``items`` while showing ``label done/total (pct%) rate``."""
    stream = stream or sys.stdout
    interactive = stream.isatty()
    start, next_report = time.time(), 0.1
    done = 0
    for done, item in enumerate(items, start=1):
        yield item
        fraction = done / max(total, 1)
        if interactive or fraction >= next_report or done == total:
            rate = done / max(time.time() - start, 1e-9)
            end = "\r" if interactive and done < total else "\n"
            eta = f", eta {(total - done) / max(rate, 1e-9):.0f} s" if done < total else ""
            shown = f"{rate:.1f}" if rate < 10 else f"{rate:.0f}"  # slow loops: not "0/s"
            stream.write(f"{label} {done}/{total} ({fraction:.0%}, {shown}/s{eta}){end}")
            stream.flush()
            while next_report <= fraction:
                next_report += 0.1
