"""vivace: efficiency-aware multi-agent orchestration over vLLM."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vivace")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
