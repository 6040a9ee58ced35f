"""The XML layer of launch files: elements with their line, checks, declared arguments."""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass
from pathlib import Path

from revqom_nodes.launcher.substitutions import LaunchError

CONDITIONS = ("if", "unless")


@dataclass
class Element:
    """One XML element with the place it came from."""

    tag: str
    attrib: dict[str, str]
    children: list[Element]
    file: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def truth(text: str, where: str) -> bool:
    """A launch boolean: true/1 or false/0 in any case, as ``launch`` conditions read them."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise LaunchError(f"{where}: '{text}' is not a boolean (expected true, false, 1 or 0)")


def check_attributes(element: Element, allowed: set[str]) -> None:
    """Refuse attributes this runner does not implement, naming them."""
    unknown = sorted(set(element.attrib) - allowed)
    if unknown:
        raise LaunchError(
            f"{element.where}: attribute(s) {', '.join(unknown)} of <{element.tag}> not supported by the "
            f"revqom launch runner (supported: {', '.join(sorted(allowed))})"
        )


def check_children(element: Element, allowed: set[str]) -> None:
    """Refuse child tags this runner does not implement, naming them."""
    for child in element.children:
        if child.tag not in allowed:
            raise LaunchError(
                f"{child.where}: <{child.tag}> inside <{element.tag}> is not supported by the revqom launch "
                f"runner (supported: {', '.join(f'<{t}>' for t in sorted(allowed)) or 'none'})"
            )


def require_attribute(element: Element, attribute: str) -> None:
    """Refuse an element that lacks a mandatory attribute."""
    if attribute not in element.attrib:
        raise LaunchError(f"{element.where}: <{element.tag}> needs the attribute '{attribute}'")


def load_xml(path: Path) -> Element:
    """Parse a launch file, keeping line numbers; its root must be ``<launch>``."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise LaunchError(f"cannot read launch file {path}: {error.strerror}") from None
    parser = xml.parsers.expat.ParserCreate()
    stack: list[Element] = []
    roots: list[Element] = []

    def start(tag: str, attrib: dict[str, str]) -> None:
        element = Element(tag, dict(attrib), [], path, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(element)
        stack.append(element)

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: stack.pop()
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as error:
        raise LaunchError(f"{path}:{error.lineno}: malformed XML: {error}") from None
    root = roots[0]
    if root.tag != "launch":
        raise LaunchError(f"{root.where}: the root element must be <launch>, not <{root.tag}>")
    check_attributes(root, {"version"})
    return root


@dataclass(frozen=True)
class ArgumentDeclaration:
    """An ``<arg>`` as written (default unevaluated); conditional when under if/unless."""

    name: str
    default: str | None
    description: str
    choices: tuple[str, ...] | None
    conditional: bool
    where: str


def declared_arguments(root: Element) -> list[ArgumentDeclaration]:
    """The ``<arg>`` declarations of one file (top level and inside groups)."""
    found: list[ArgumentDeclaration] = []

    def walk(elements: list[Element], conditional: bool) -> None:
        for element in elements:
            here = conditional or any(c in element.attrib for c in CONDITIONS)
            if element.tag == "arg" and "name" in element.attrib:
                choices = tuple(c.attrib.get("value", "") for c in element.children if c.tag == "choice")
                found.append(
                    ArgumentDeclaration(
                        name=element.attrib["name"],
                        default=element.attrib.get("default"),
                        description=element.attrib.get("description", ""),
                        choices=choices or None,
                        conditional=here,
                        where=element.where,
                    )
                )
            elif element.tag == "group":
                walk(element.children, here)

    walk(root.children, False)
    return found


def format_arguments(declarations: list[ArgumentDeclaration]) -> str:
    """One line per argument: ``name (default or required[, choices]): description``."""
    lines = []
    for d in declarations:
        notes = ["required" if d.default is None else f"default: '{d.default}'"]
        if d.choices:
            notes.append(f"one of: {', '.join(d.choices)}")
        lines.append(f"  {d.name} ({'; '.join(notes)}): {d.description or 'no description given'}")
    return "\n".join(lines) if lines else "  (no arguments)"
