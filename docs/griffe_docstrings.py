"""Griffe extension for the API reference: reads jaxlr's docstrings as Google-style Markdown.

jaxlr's docstrings (like optax's) title their doctest section ``Example:``, which Google style
calls ``Examples:``; an ``Args`` entry may name several parameters at once (``in_features,
hidden, num_classes: the model's sizes``), which Google style spells one per line; and they use
a few reStructuredText forms (``:func:`name```, ``.. math::``, a paragraph ending in ``::``
before an indented block). All are rewritten before parsing, so that examples render as code,
every parameter is checked against the signature, names read as code and math as a code block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

EXAMPLE = re.compile(r"^Example:[ \t]*$", re.MULTILINE)
SEVERAL = re.compile(r"^(?P<indent>[ \t]+)(?P<names>\w+(?:, \w+)+): (?P<text>.*)$", re.MULTILINE)
ROLE = re.compile(r":(?:func|class|data|mod|meth|attr|obj|exc|math):`~?(?P<name>[^`]+)`")
MATH_BLOCK = re.compile(r"^[ \t]*\.\. math::[ \t]*\n", re.MULTILINE)
MATH_INLINE = re.compile(r"\.\. math:: (?P<expr>.+)$", re.MULTILINE)
LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)


def google_style(text: str) -> str:
    """``text`` with ``Example:`` titled ``Examples:``, ``a, b: text`` split per name, roles
    as code spans, math directives as code."""
    text = EXAMPLE.sub("Examples:", text)
    text = ROLE.sub(lambda m: f"`{m.group('name')}`", text)
    text = MATH_INLINE.sub(lambda m: f"`{m.group('expr').strip()}`", text)
    text = MATH_BLOCK.sub("", text)
    text = LITERAL.sub(":", text)
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
