"""The CLI's commands, one module per command (``vivace/cli.py`` registers them in a fixed order).

Each module has ``register(sub, parents)``, which adds its parser(s) with the
shared flag groups it uses (``_io.Parents``) and sets ``handler``, a function
``(args, config) -> exit code`` (sync or async). Modules import only argparse
helpers at import time; rich, torch, vLLM, LangGraph, ChromaDB and Textual are
imported inside the handlers, so ``vivace --help`` stays quick. Shared helpers
live in ``_io``.
"""
