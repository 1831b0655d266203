"""Griffe extension for the API reference: reads jaxlr's docstrings as Google style.

jaxlr's docstrings (like optax's) title their doctest section ``Example:``, which Google style
calls ``Examples:``; and an ``Args`` entry may name several parameters at once (``in_features,
hidden, num_classes: the model's sizes``), which Google style spells one per line. Both are
rewritten before parsing, so that examples render as code and every parameter is checked
against the signature.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

EXAMPLE = re.compile(r"^Example:[ \t]*$", re.MULTILINE)
SEVERAL = re.compile(r"^(?P<indent>[ \t]+)(?P<names>\w+(?:, \w+)+): (?P<text>.*)$", re.MULTILINE)


def google_style(text: str) -> str:
    """``text`` with ``Example:`` titled ``Examples:`` and ``a, b: text`` split per name."""
    text = EXAMPLE.sub("Examples:", text)
    return SEVERAL.sub(
        lambda m: "\n".join(
            f"{m.group('indent')}{name}: {m.group('text')}" for name in m.group("names").split(", ")
        ),
        text,
    )


class GoogleStyle(griffe.Extension):
    """Rewrites each docstring with :func:`google_style` as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = google_style(obj.docstring.value)
