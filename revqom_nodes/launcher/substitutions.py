"""Substitutions of the ROS 2 launch frontends (``$(var x)``, ...) and package look-ups.

The grammar follows ``launch/frontend/grammar.lark``: outside a substitution, text is
literal and ``\\`` escapes the next character; inside ``$(name arg ...)`` arguments are
separated by single spaces and may be quoted with ``'`` or ``"`` (quotes removed, spaces
kept) or contain nested substitutions. Supported substitutions:

| substitution | value |
|---|---|
| ``$(var NAME)`` | the launch configuration NAME (an error if unset) |
| ``$(env NAME [DEFAULT])`` | the environment variable, else DEFAULT (an error if neither) |
| ``$(find-pkg-share PKG)`` | the package's share directory, see ``revqom_nodes.share`` |
| ``$(dirname)`` | the directory of the launch file being read |

Anything else (``$(command ...)``, ``$(eval ...)``, ...) raises ``LaunchError``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from revqom_nodes.share import PackageNotFoundError, package_share_directory

SUPPORTED_SUBSTITUTIONS = ("var", "env", "find-pkg-share", "dirname")

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class LaunchError(Exception):
    """A launch file, an argument or a node cannot be handled; the message says where and why."""


@dataclass(frozen=True)
class Substitution:
    """``$(name arguments...)``; each argument is itself a template."""

    name: str
    arguments: tuple[Template, ...]


Template = tuple[str | Substitution, ...]


@dataclass(frozen=True)
class Scope:
    """What substitutions read: launch configurations and the current launch file."""

    configurations: Mapping[str, str]
    launch_file: Path


class _Reader:
    """Recursive-descent reader of one attribute value."""

    def __init__(self, text: str, where: str) -> None:
        self.text, self.where, self.pos = text, where, 0

    def fail(self, why: str) -> LaunchError:
        return LaunchError(f"{self.where}: {why} in {self.text!r} (at character {self.pos})")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def template(self, quote: str | None = None) -> Template:
        """Text up to ``quote`` (or the end); quoted text keeps spaces and parentheses."""
        parts: list[str | Substitution] = []
        literal: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if quote is not None and char == quote:
                break
            if char == "\\" and self.pos + 1 < len(self.text):
                literal.append(self.text[self.pos + 1])
                self.pos += 2
            elif self.peek(2) == "$(":
                if literal:
                    parts.append("".join(literal))
                    literal = []
                parts.append(self.substitution())
            else:
                literal.append(char)
                self.pos += 1
        if literal:
            parts.append("".join(literal))
        return tuple(parts)

    def substitution(self) -> Substitution:
        self.pos += 2
        match = _IDENTIFIER.match(self.text, self.pos)
        if match is None:
            raise self.fail("expected a substitution name after '$('")
        self.pos = match.end()
        arguments: list[Template] = []
        while self.peek() == " ":
            self.pos += 1
            arguments.append(self.argument())
        if self.peek() != ")":
            raise self.fail(f"unterminated substitution $({match.group()} ...")
        self.pos += 1
        return Substitution(match.group(), tuple(arguments))

    def argument(self) -> Template:
        quote = self.peek()
        if quote in ("'", '"'):
            self.pos += 1
            value = self.template(quote)
            if self.peek() != quote:
                raise self.fail(f"unterminated {quote}-quoted argument")
            self.pos += 1
            return value
        parts: list[str | Substitution] = []
        while self.pos < len(self.text) and self.peek() not in (" ", ")"):
            char = self.peek()
            if self.peek(2) == "$(":
                parts.append(self.substitution())
            elif char == "\\" and self.pos + 1 < len(self.text):
                parts.append(self.text[self.pos + 1])
                self.pos += 2
            elif char in "('\"":
                raise self.fail(f"unexpected {char!r} in a substitution argument (quote the argument)")
            else:
                parts.append(char)
                self.pos += 1
        if not parts:
            raise self.fail("empty substitution argument")
        return _merge_text(parts)


def _merge_text(parts: list[str | Substitution]) -> Template:
    merged: list[str | Substitution] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return tuple(merged)


def parse_template(text: str, where: str) -> Template:
    """Split an attribute value into literal text and substitutions (not yet evaluated)."""
    reader = _Reader(text, where)
    template = reader.template()
    if reader.pos != len(text):
        raise reader.fail("unexpected character")
    return template


def evaluate_part(part: str | Substitution, scope: Scope, where: str) -> str:
    """The text of one template part."""
    if isinstance(part, str):
        return part
    args = [evaluate(argument, scope, where) for argument in part.arguments]
    if part.name == "var" and len(args) == 1:
        if args[0] not in scope.configurations:
            raise LaunchError(f"{where}: $(var {args[0]}): launch configuration '{args[0]}' does not exist")
        return scope.configurations[args[0]]
    if part.name == "env" and len(args) in (1, 2):
        value = os.environ.get(args[0], args[1] if len(args) == 2 else None)
        if value is None:
            raise LaunchError(f"{where}: $(env {args[0]}): environment variable '{args[0]}' is not set")
        return value
    if part.name == "find-pkg-share" and len(args) == 1:
        try:
            return str(package_share_directory(args[0]))
        except PackageNotFoundError as error:
            raise LaunchError(f"{where}: {error}") from None
    if part.name == "dirname" and not args:
        return str(scope.launch_file.resolve().parent)
    if part.name in SUPPORTED_SUBSTITUTIONS:
        raise LaunchError(f"{where}: wrong number of arguments to $({part.name}): {args}")
    raise LaunchError(
        f"{where}: substitution $({part.name} ...) is not supported by the revqom launch runner "
        f"(supported: {', '.join(SUPPORTED_SUBSTITUTIONS)})"
    )


def evaluate(template: Template, scope: Scope, where: str) -> str:
    """The text of a whole template."""
    return "".join(evaluate_part(part, scope, where) for part in template)


def substitute(text: str, scope: Scope, where: str) -> str:
    """Parse and evaluate an attribute value."""
    return evaluate(parse_template(text, where), scope, where)
