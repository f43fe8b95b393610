"""The Jinja sandbox templates render in, and the bounds on what a render may produce.

Templates are producer-written code and event values come from outside, so a render
is bounded twice: values are bounded when the event is parsed (`relay.lenient`), and
the output is pulled from `Template.generate()` piece by piece and abandoned as soon
as it passes a fixed size. No render ever holds more than the bound plus one piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import BaseLoader, StrictUndefined, select_autoescape
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

# A default message renders to a few kilobytes (every value it shows is bounded at
# parse time); these leave room for a producer's richer templates while keeping every
# stored attempt, and every email, far from megabytes.
MAX_BODY_CHARS = 256 * 1024  # a webhook body, or an email's text or HTML part
MAX_SUBJECT_CHARS = 998  # RFC 5322's longest line; a subject is one line
# The largest whole number `*` and `**` may make: far more than any message needs (a
# 1,233-digit number), far from the 10 ** 10 ** 9 that would hang the render before any
# output is made.
_MAX_INT_BITS = 4096


class RenderError(Exception):
    """A template is missing, broken, uses an unknown variable, or renders invalid JSON."""


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, where `*` and `**` cannot build a huge value in one step.

    `"x" * 1000000000` would be built whole inside a single expression, before the
    output bound could see it, so repetition is checked against that bound first.
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, op: str, left: Any, right: Any) -> Any:
        if op == "**":
            _check_power(left, right)
        else:  # "*", the only other operator intercepted
            _check_repetition(left, right)
            _check_repetition(right, left)
            _check_product(left, right)
        return super().call_binop(context, op, left, right)


def make_environment(loader: BaseLoader, filters: dict[str, Callable[..., Any]]) -> BoundedSandbox:
    """One environment per template set: Jinja caches each compiled template in it."""
    env = BoundedSandbox(
        loader=loader,
        # Templates are compiled and checked at start; a producer restarts the relay to
        # change one. auto_reload would stat every template file on every render.
        auto_reload=False,
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # A missing optional value (no expiry, no Pix code) prints as nothing, not "None".
        finalize=lambda value: "" if value is None else value,
    )
    env.filters.update(filters)
    return env


def join_bounded(pieces: Iterable[str], max_chars: int, name: str) -> str:
    """Join rendered pieces, or raise `RenderError` once they pass `max_chars`.

    The pieces come from `Template.generate()`, so stopping here stops the render:
    nothing past the bound is ever produced.
    """
    parts: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > max_chars:
            raise RenderError(f"{name}: rendered output is over {max_chars} characters")
        parts.append(piece)
    return "".join(parts)


def _check_repetition(sequence: Any, times: Any) -> None:
    repeatable = isinstance(sequence, str | list | tuple) and isinstance(times, int)
    if repeatable and len(sequence) * times > MAX_BODY_CHARS:
        raise SecurityError(f"repeating a value {times} times is over {MAX_BODY_CHARS}")


def _check_product(left: Any, right: Any) -> None:
    whole = isinstance(left, int) and isinstance(right, int)
    if whole and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
        raise SecurityError(f"a product over {_MAX_INT_BITS} bits")


def _check_power(base: Any, exponent: Any) -> None:
    growing = isinstance(base, int) and isinstance(exponent, int | float) and abs(base) > 1
    if growing and base.bit_length() * abs(exponent) > _MAX_INT_BITS:
        raise SecurityError(f"a power over {_MAX_INT_BITS} bits")
