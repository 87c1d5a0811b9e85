"""The documents a map step runs over: the text files of one folder, named by a step's params.

Why a module: a pipeline file names the folder (``params = { folder = "notes" }``,
relative to the working directory), and every way that can be wrong (no
folder given, no such folder, no text files in it, a file that is not UTF-8)
must be one ``InputError`` naming it, before any model call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vivace.errors import InputError

SUFFIXES = (".txt", ".md")
#: Characters kept per document: a map call must fit the model's context with its prompt.
MAX_CHARS = 6000


def read_documents(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, text) of each .txt/.md file in ``params["folder"]``, in name order."""
    folder = params.get("folder")
    if not isinstance(folder, str) or not folder.strip():
        raise InputError('the documents agent needs params = { folder = "..." } naming a folder of .txt/.md files')
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(f"documents folder not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise InputError(f"no .txt or .md files in {path}")
    out = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise InputError(f"{file}: not UTF-8 text") from None
        if text:
            out.append((file.name, text[:MAX_CHARS]))
    return out
