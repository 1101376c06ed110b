"""Progress bars with rates and ETA for every long step (tqdm), quiet when stderr is not a terminal or in CI."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def bar(total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0, **kwargs) -> tqdm:
    """A tqdm bar. Outside a terminal it still prints, but at most every 10 s, so logs stay readable."""
    interactive = sys.stderr.isatty() and not os.environ.get("CI")
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True,
                mininterval=0.2 if interactive else 10.0, smoothing=0.1, **kwargs)
