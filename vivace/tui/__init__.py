"""The terminal UI: a live view of runs fed by controller events (``--live``, ``vivace tui``)."""

from vivace.trace import estimate_normal_s
from vivace.tui.view import Outcome, RunView, backend_probe

__all__ = ["Outcome", "RunView", "backend_probe", "estimate_normal_s"]
