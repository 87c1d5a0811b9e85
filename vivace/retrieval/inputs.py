"""What ingest takes in, checked before anything heavy runs: collection names, paths, files.

Why a module of its own: these checks must run before the embedder loads (a
typo in a path should cost milliseconds, not the 10 s of loading MiniLM) and
before Chroma creates anything, so they import neither. And one bad file in a
folder (a name that is not UTF-8, unreadable bytes) is skipped with a reason,
never a reason to lose the folder's good files.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from vivace.errors import InputError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}

# Chroma's own rule (chromadb 1.x, its Rust validation): 3-512 characters from [a-zA-Z0-9._-],
# starting and ending with a letter or digit, no "..", and not an IP address.
_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,510})[a-zA-Z0-9]")
NAME_RULE = ("3-512 characters from [a-zA-Z0-9._-], starting and ending with a letter or digit, "
             "no '..', not an IP address")


def check_collection_name(name: str) -> str:
    """``name`` if Chroma accepts it as a collection name; else an InputError stating Chroma's rule."""
    if not _NAME.fullmatch(name) or ".." in name or _is_ip_address(name):
        raise InputError(f"invalid collection name {shown(name)!r}: a collection name has {NAME_RULE}")
    return name


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` printable and JSON-safe: bytes that are not UTF-8 become ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8_name(path: Path) -> bool:
    """False when the OS handed Python a name with bytes that are not UTF-8 (kept as surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every path as a Path, once each is known to exist and be readable; else one InputError naming it."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise InputError(f"no such file or folder: {shown(path)}") from None
        except OSError as exc:
            raise InputError(f"cannot read {shown(path)}: {exc.strerror or exc}") from None
        need = os.R_OK | (os.X_OK if path.is_dir() else 0)
        if not os.access(path, need):
            raise InputError(f"cannot read {shown(path)}: permission denied")
        out.append(path)
    if not out:
        raise InputError("no file or folder to ingest")
    return out


def iter_files(paths: Iterable[str | os.PathLike[str]], skipped: list[tuple[str, str]] | None = None) -> Iterator[Path]:
    """Files named directly, and text/markdown files under named folders (hidden ones skipped).

    A file whose name is not UTF-8 cannot be stored as a chunk's source: it is
    skipped with a warning, and added to ``skipped`` as ``(path, why)``.
    """
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            candidates: Iterable[Path] = (
                sub for sub in sorted(path.rglob("*"))
                if sub.suffix.lower() in TEXT_SUFFIXES
                and not any(p.startswith(".") for p in sub.relative_to(path).parts) and sub.is_file()
            )
        elif path.is_file():
            candidates = [path]
        else:
            raise InputError(f"no such file or folder: {shown(path)}")
        for sub in candidates:
            if is_utf8_name(sub):
                yield sub
                continue
            log.warning("skipping %s: the file name is not UTF-8", shown(sub))
            if skipped is not None:
                skipped.append((shown(sub), "file name is not UTF-8"))


def read_file(path: Path) -> tuple[str | None, str]:
    """``(text, "")``, or ``(None, why)`` with a warning when the file is binary, not UTF-8 or unreadable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        why = f"cannot read: {exc.strerror or exc}"
        log.warning("skipping %s: %s", shown(path), why)
        return None, why
    if b"\x00" in data[:8192]:
        log.warning("skipping %s: binary file", shown(path))
        return None, "binary file"
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError as exc:
        log.warning("skipping %s: not UTF-8 (byte %d)", shown(path), exc.start)
        return None, "not UTF-8"


def read_text(path: Path) -> str | None:
    """The file's text, or None (with a warning) when it is binary, not UTF-8 or unreadable."""
    return read_file(path)[0]
