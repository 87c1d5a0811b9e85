"""The terminal UI: a live view of runs fed by controller events (``--live``, ``vivace tui``)."""

from vivace.tui.view import Outcome, RunView, backend_probe, estimate_normal_s

__all__ = ["Outcome", "RunView", "backend_probe", "estimate_normal_s"]
