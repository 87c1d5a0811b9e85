"""Structured output: what a call's reply must look like, and the check that it does.

Why one spec for every backend: an agent asks for ``output=Verdict`` (a
pydantic model), a JSON schema, a list of choices or a regex, and each backend
maps the same ``OutputSpec`` to what it has (grammar-constrained decoding in
the in-process vLLM engine, ``structured_outputs`` or ``response_format`` on
an endpoint). The call path then validates the text with pydantic everywhere,
so a backend that cannot constrain decoding still never hands an agent a
reply that breaks its schema.

Every string in a JSON schema gets a ``maxLength``: under a grammar a small
model can otherwise stay inside one string until the token cap, and the
reply is then cut mid-JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from vivace.errors import InputError

DEFAULT_MAX_STRING = 400  # characters: bounds every string a grammar lets the model write
MAX_NUMBER = 10**12  # bounds every number the same way: a small model otherwise writes digits until its token cap
_RANGE_KEYS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "const"}

class OutputInvalid(ValueError):
    """A reply that does not match its ``OutputSpec``; the message says where, for the model's retry."""


@dataclass(frozen=True)
class OutputSpec:
    """One of: a JSON schema (with the pydantic model it came from, if any), a set of choices, or a regex."""

    kind: Literal["json", "choice", "regex"]
    schema: dict[str, Any] | None = None
    choices: tuple[str, ...] = ()
    regex: str | None = None
    model: type[BaseModel] | None = field(default=None, compare=False)
    name: str = "reply"
    tool_reply: bool = False  # a reply under tools (vivace.runtime.tool_calls): content or tool calls

    def validate(self, text: str) -> Any:
        """The parsed value (a model instance, a JSON value, or the text), or ``OutputInvalid``."""
        if self.kind == "choice":
            value = text.strip()
            if value not in self.choices:
                raise OutputInvalid(f"{value[:60]!r} is not one of {', '.join(self.choices)}")
            return value
        if self.kind == "regex":
            if re.fullmatch(self.regex or "", text) is None:
                raise OutputInvalid(f"{text[:60]!r} does not match the pattern {self.regex}")
            return text
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OutputInvalid(f"not JSON ({exc.msg} at character {exc.pos})") from None
        except ValueError as exc:  # not a decode error: an integer of more digits than int() converts
            raise OutputInvalid(f"not JSON ({exc})") from None
        try:
            if self.model is not None:
                return self.model.model_validate(data)
            return _validator(self.schema or {}).validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "the reply"
            raise OutputInvalid(f"{where}: {first.get('msg', 'invalid')}") from None

    def describe(self) -> str:
        """What the reply must be, in words the model reads on its one retry."""
        if self.kind == "choice":
            return "exactly one of: " + ", ".join(self.choices)
        if self.kind == "regex":
            return f"text matching the pattern {self.regex}"
        return "one JSON value matching this schema: " + json.dumps(self.schema, separators=(",", ":"))


def _validator(schema: dict[str, Any]) -> TypeAdapter[Any]:
    """A validator for a plain JSON schema: pydantic checks the JSON types; the grammar did the rest."""
    return TypeAdapter(_python_type(schema))


def _python_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    simple = {"string": str, "integer": int, "number": float, "boolean": bool, "null": type(None)}
    if isinstance(kind, str) and kind in simple:
        return simple[kind]
    if kind == "array":
        return list[_python_type(schema.get("items") or {})]  # type: ignore[misc]
    if kind == "object":
        return dict[str, Any]
    return Any


def output_spec(output: Any, max_string: int = DEFAULT_MAX_STRING) -> OutputSpec:
    """An ``OutputSpec`` from what a caller passes as ``output=``; bad input is an ``InputError``."""
    if isinstance(output, OutputSpec):
        return output
    if isinstance(output, type) and issubclass(output, BaseModel):
        return OutputSpec("json", bound_strings(output.model_json_schema(), max_string), model=output,
                          name=output.__name__)
    if isinstance(output, dict):
        if not output:
            raise InputError("output: an empty JSON schema constrains nothing")
        return OutputSpec("json", bound_strings(output, max_string), name=str(output.get("title") or "reply"))
    if isinstance(output, re.Pattern):
        return OutputSpec("regex", regex=output.pattern)
    if isinstance(output, str):
        try:
            re.compile(output)
        except re.error as exc:
            raise InputError(f"output: {output!r} is not a valid regex ({exc})") from None
        return OutputSpec("regex", regex=output)
    if isinstance(output, Sequence) and output and all(isinstance(c, str) and c for c in output):
        return OutputSpec("choice", choices=tuple(output))
    raise InputError("output must be a pydantic model, a JSON schema (dict), a non-empty list of choices, or a regex; "
                     f"got {type(output).__name__}")


def example_value(schema: dict[str, Any], word: str = "example") -> Any:
    """A small value that ``schema`` accepts: what the fake backend answers, as a grammar would make a model.

    Covers what vivace's schemas use (objects, arrays, enums, consts, anyOf, the
    JSON types); strings are ``word``, cut to ``maxLength``.
    """
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_value(schema[key][0], word)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: example_value(v, word) for k, v in props.items() if k in schema.get("required", list(props))}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [example_value(schema.get("items") or {}, f"{word} {i + 1}") for i in range(count)]
    if kind in ("integer", "number"):
        return max(0, schema.get("minimum", 0))
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return word[: schema.get("maxLength", len(word))]


def bound_strings(schema: dict[str, Any], max_len: int = DEFAULT_MAX_STRING) -> dict[str, Any]:
    """A copy of ``schema`` where every string without a bound gets ``maxLength``, every number a range."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items()}
        if out.get("type") == "string" and not ({"maxLength", "enum", "const", "pattern"} & set(out)):
            out["maxLength"] = max_len
        if out.get("type") in ("integer", "number") and not (_RANGE_KEYS & set(out)):
            out["minimum"], out["maximum"] = -MAX_NUMBER, MAX_NUMBER  # a grammar then has a last digit
        return out

    return cast(dict[str, Any], walk(schema))  # a dict walks to a dict
