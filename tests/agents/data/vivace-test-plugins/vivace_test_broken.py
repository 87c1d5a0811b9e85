"""A plug-in that fails at import: vivace must skip it with a warning."""

raise ImportError("this plug-in is broken on purpose")
