"""Command implementations behind ``vivace.cli``; imported lazily, one module per command group."""
