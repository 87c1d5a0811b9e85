"""vivace's benchmarks, apart from the library: each measures and returns a dict that becomes ``report.json``.

Why a package of its own: the library (``vivace``) never imports it, so what
a user installs to run agents holds no measuring code, and a bench can use
anything vivace offers without a cycle. Its commands reach the CLI through an
entry point (``vivace_bench.commands``); its statistics are in one module
(``vivace_bench.stats``). What the library reads back from a bench (the
quantization choice, the safety guard's verdicts) has its one schema and
writer in the library: ``vivace.runtime.quant_choice`` and
``vivace.agents.guard``. Speed is measured here, never by timed tests.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


def write_report(out_dir: Path, report: dict[str, Any],
                 plot: Callable[[dict[str, Any], Path], Any] | None = None) -> Path:
    """Write ``out_dir/report.json`` atomically, so an interrupted bench never leaves half a file.

    With ``plot``, draw it into ``out_dir`` first and name it under ``report["plot"]``; a plot that
    fails is logged and the figures are written all the same.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if plot is not None:
        try:
            report["plot"] = str(plot(report, out_dir))
        except Exception as exc:  # a plot must never cost the figures
            log.warning("plot not written: %s", exc)
    path = out_dir / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    return path
