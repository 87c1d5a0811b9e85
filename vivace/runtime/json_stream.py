"""Complete entries of a JSON list, found while the JSON is still being decoded.

Why: a plan or a tool-call reply decoded under a schema is
``{"calls": [{...}, {...}]}``; each entry can be dispatched the moment its
closing brace arrives, long before the model has written the rest. The scan
is incremental (each character is looked at once) and knows JSON strings and
escapes, so braces inside argument text do not fool it.
"""

from __future__ import annotations

import json
from typing import Any


class ListEntries:
    """Feed text as it streams (``feed``); get each object entry of the first list in the top-level object."""

    def __init__(self) -> None:
        self.text = ""
        self._pos = 0
        self._stack: list[str] = []
        self._in_string = False
        self._escape = False
        self._list_depth: int | None = None  # stack depth inside the list, once it opened
        self._start: int | None = None  # where the entry being read began
        self.count = 0

    def feed(self, piece: str) -> list[Any]:
        """The entries completed by ``piece``, parsed, in order."""
        self.text += piece
        done: list[Any] = []
        text = self.text
        for i in range(self._pos, len(text)):
            ch = text[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                continue
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._stack.append(ch)
                if ch == "[" and self._list_depth is None and self._stack == ["{", "["]:
                    self._list_depth = 2
                elif ch == "{" and self._list_depth is not None and len(self._stack) == self._list_depth + 1 \
                        and self._stack[self._list_depth - 1] == "[":
                    self._start = i
            elif ch in "}]" and self._stack:
                self._stack.pop()
                if ch == "}" and self._start is not None and self._list_depth is not None \
                        and len(self._stack) == self._list_depth:
                    try:
                        done.append(json.loads(text[self._start: i + 1]))
                        self.count += 1
                    except ValueError:
                        pass  # not valid JSON after all: the final validation reports it
                    self._start = None
                if ch == "]" and self._list_depth is not None and len(self._stack) < self._list_depth:
                    self._list_depth = -1  # the list closed: nothing later counts
        self._pos = len(text)
        return done
