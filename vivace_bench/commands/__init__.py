"""The CLI of the benchmarks: ``vivace bench BENCH`` (``bench``, one module per bench) and ``vivace report``.

Plugged into ``vivace``'s parser through the ``vivace.commands`` entry points
(``pyproject.toml``), so the library's CLI never imports the benchmarks. The
modules follow ``vivace.commands``' rules: argparse helpers at import time,
everything heavy inside the handlers.
"""
