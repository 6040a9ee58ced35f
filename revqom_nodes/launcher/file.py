"""Reading ROS 2 XML launch files into node specifications, without starting anything.

Follows the semantics of ``launch_xml`` / ``launch_ros`` for the subset the project uses:

- ``<arg name default description>`` (+ ``<choice value>``): required when it has no
  default; command-line values win over defaults.
- ``<let name value>``; ``<group scoped forwarding>`` (+ ``<keep name value>``): a scoped
  group (the default) restores launch configurations, the ROS namespace included, after it.
- ``<push-ros-namespace namespace>`` (also spelled ``push_ros_namespace``).
- ``<include file>`` (+ ``<arg name value>``): XML files only, not scoped (as in ROS 2:
  wrap it in a ``<group>`` to scope it); its required arguments must be given.
- ``<node pkg exec name namespace exec_name args ros_args output cwd on_exit="shutdown"
  sigterm_timeout sigkill_timeout>`` with ``<param name value [value-sep] [type]>``,
  nested ``<param name><param .../></param>``, ``<param from="file.yaml"/>``,
  ``<remap from to>`` and ``<env name value>`` children.
- ``if`` / ``unless`` on every action (``true``/``1``/``false``/``0``, any case).

Any other tag or attribute raises ``LaunchError`` naming it and its ``file:line``.
"""

from __future__ import annotations

import logging
import shlex
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from revqom_nodes.launcher.elements import (
    CONDITIONS,
    Element,
    check_attributes,
    check_children,
    declared_arguments,
    format_arguments,
    load_xml,
    require_attribute,
    truth,
)
from revqom_nodes.launcher.node import (
    NodeSpec,
    ParameterDict,
    deep_merge,
    parse_parameter_value,
    prefix_namespace,
    validate_name,
    validate_namespace,
)
from revqom_nodes.launcher.substitutions import (
    LaunchError,
    Scope,
    Substitution,
    evaluate_part,
    parse_template,
    substitute,
)
from revqom_nodes.share import PackageNotFoundError, package_share_directory

logger = logging.getLogger(__name__)

MAX_INCLUDE_DEPTH = 32
OUTPUT_MODES = ("screen", "log", "both")


@dataclass
class _Context:
    configurations: dict[str, str]
    launch_file: Path
    declared: set[str] = field(default_factory=set)
    nodes: list[NodeSpec] = field(default_factory=list)
    depth: int = 0

    def sub(self, element: Element, attribute: str) -> str:
        return substitute(element.attrib[attribute], Scope(self.configurations, self.launch_file),
                          f"{element.where} <{element.tag} {attribute}>")

    def optional(self, element: Element, attribute: str) -> str | None:
        return self.sub(element, attribute) if attribute in element.attrib else None

    def flag(self, element: Element, attribute: str, default: bool) -> bool:
        if attribute not in element.attrib:
            return default
        return truth(self.sub(element, attribute), f"{element.where} <{element.tag} {attribute}>")


def _run_actions(elements: list[Element], ctx: _Context) -> None:
    for element in elements:
        handler = _ACTIONS.get(element.tag)
        if handler is None:
            raise LaunchError(
                f"{element.where}: launch tag <{element.tag}> is not supported by the revqom launch runner "
                f"(supported: {', '.join(f'<{t}>' for t in _ACTIONS)}); run this file with `ros2 launch`"
            )
        if "if" in element.attrib and "unless" in element.attrib:
            raise LaunchError(f"{element.where}: <{element.tag}> cannot have both 'if' and 'unless'")
        if "if" in element.attrib and not ctx.flag(element, "if", True):
            continue
        if "unless" in element.attrib and ctx.flag(element, "unless", False):
            continue
        handler(element, ctx)


def _arg(element: Element, ctx: _Context) -> None:
    check_attributes(element, {"name", "default", "description", *CONDITIONS})
    check_children(element, {"choice"})
    require_attribute(element, "name")
    name = element.attrib["name"]
    ctx.declared.add(name)
    if name not in ctx.configurations:
        if "default" not in element.attrib:
            description = element.attrib.get("description", "no description given")
            raise LaunchError(
                f"{element.where}: required launch argument '{name}' ({description}) was not provided"
            )
        ctx.configurations[name] = ctx.sub(element, "default")
    for choice in element.children:
        check_attributes(choice, {"value"})
        require_attribute(choice, "value")
    choices = [c.attrib["value"] for c in element.children]
    if choices and ctx.configurations[name] not in choices:
        raise LaunchError(f"{element.where}: argument '{name}' is '{ctx.configurations[name]}', "
                          f"valid choices are: {', '.join(choices)}")


def _let(element: Element, ctx: _Context) -> None:
    check_attributes(element, {"name", "value", *CONDITIONS})
    check_children(element, set())
    require_attribute(element, "name")
    require_attribute(element, "value")
    ctx.configurations[ctx.sub(element, "name")] = ctx.sub(element, "value")


def _group(element: Element, ctx: _Context) -> None:
    check_attributes(element, {"scoped", "forwarding", *CONDITIONS})
    scoped = ctx.flag(element, "scoped", True)
    forwarding = ctx.flag(element, "forwarding", True)
    keeps = [c for c in element.children if c.tag == "keep"]
    kept = {}
    for keep in keeps:
        check_attributes(keep, {"name", "value"})
        require_attribute(keep, "name")
        require_attribute(keep, "value")
        kept[ctx.sub(keep, "name")] = ctx.sub(keep, "value")
    saved = dict(ctx.configurations)
    if scoped and not forwarding:
        ctx.configurations.clear()
    ctx.configurations.update(kept)
    _run_actions([c for c in element.children if c.tag != "keep"], ctx)
    if scoped:
        ctx.configurations.clear()
        ctx.configurations.update(saved)


def _push_ros_namespace(element: Element, ctx: _Context) -> None:
    check_attributes(element, {"namespace", *CONDITIONS})
    check_children(element, set())
    require_attribute(element, "namespace")
    namespace = prefix_namespace(ctx.configurations.get("ros_namespace"), ctx.sub(element, "namespace"))
    validate_namespace(namespace, element.where)
    ctx.configurations["ros_namespace"] = namespace


def _include(element: Element, ctx: _Context) -> None:
    check_attributes(element, {"file", *CONDITIONS})
    check_children(element, {"arg"})
    require_attribute(element, "file")
    path = Path(ctx.sub(element, "file"))
    if path.suffix in (".py", ".yaml", ".yml"):
        raise LaunchError(f"{element.where}: <include file='{path}'>: only XML launch files can be "
                          "included by the revqom launch runner")
    if not path.is_file():
        raise LaunchError(f"{element.where}: included launch file {path} does not exist "
                          "(relative paths are relative to the working directory: use $(dirname) "
                          "or $(find-pkg-share ...))")
    if ctx.depth >= MAX_INCLUDE_DEPTH:
        raise LaunchError(f"{element.where}: includes nested deeper than {MAX_INCLUDE_DEPTH} (a cycle?)")
    given: dict[str, str] = {}
    for arg in element.children:
        check_attributes(arg, {"name", "value"})
        require_attribute(arg, "name")
        require_attribute(arg, "value")
        given[ctx.sub(arg, "name")] = ctx.sub(arg, "value")
    root = load_xml(path)
    missing = [d.name for d in declared_arguments(root)
               if d.default is None and not d.conditional and d.name not in given]
    if missing:
        raise LaunchError(f"{element.where}: included launch file {path} needs argument(s) "
                          f"{', '.join(missing)}; given: {', '.join(given) or 'none'}")
    ctx.configurations.update(given)
    outer_file = ctx.launch_file
    ctx.launch_file, ctx.depth = path, ctx.depth + 1
    _run_actions(root.children, ctx)
    ctx.launch_file, ctx.depth = outer_file, ctx.depth - 1


_NODE_ATTRIBUTES = {
    "pkg", "exec", "name", "namespace", "exec_name", "args", "ros_args", "output", "cwd", "on_exit",
    "respawn", "respawn_delay", "sigterm_timeout", "sigkill_timeout", *CONDITIONS,
}


def _node(element: Element, ctx: _Context) -> None:
    check_attributes(element, _NODE_ATTRIBUTES)
    check_children(element, {"param", "remap", "env"})
    require_attribute(element, "exec")
    where = element.where
    if ctx.flag(element, "respawn", False):
        raise LaunchError(f"{where}: <node respawn='true'> is not supported by the revqom launch runner")
    on_exit = ctx.optional(element, "on_exit")
    if on_exit not in (None, "shutdown"):
        raise LaunchError(f"{where}: <node on_exit='{on_exit}'>: only on_exit='shutdown' is supported")
    output = ctx.optional(element, "output") or "log"
    if output not in OUTPUT_MODES:
        raise LaunchError(f"{where}: <node output='{output}'>: expected one of {', '.join(OUTPUT_MODES)}")
    name = ctx.optional(element, "name")
    if name is not None:
        validate_name(name, where)
    namespace = prefix_namespace(ctx.configurations.get("ros_namespace"), ctx.optional(element, "namespace"))
    if namespace is not None:
        validate_namespace(namespace, where)
    remaps, env = [], {}
    for child in element.children:
        if child.tag == "remap":
            check_attributes(child, {"from", "to"})
            require_attribute(child, "from")
            require_attribute(child, "to")
            remaps.append((ctx.sub(child, "from"), ctx.sub(child, "to")))
        elif child.tag == "env":
            check_attributes(child, {"name", "value"})
            require_attribute(child, "name")
            require_attribute(child, "value")
            env[ctx.sub(child, "name")] = ctx.sub(child, "value")
    spec = NodeSpec(
        label=ctx.optional(element, "exec_name") or "",
        package=ctx.optional(element, "pkg"),
        executable=ctx.sub(element, "exec"),
        name=name,
        namespace=namespace,
        arguments=_command_line(element, "args", ctx),
        ros_arguments=_command_line(element, "ros_args", ctx),
        parameters=_parameters([c for c in element.children if c.tag == "param"], ctx),
        remappings=remaps,
        env=env,
        cwd=ctx.optional(element, "cwd"),
        output=output,
        on_exit_shutdown=on_exit == "shutdown",
        sigterm_timeout_s=_seconds(element, "sigterm_timeout", ctx),
        sigkill_timeout_s=_seconds(element, "sigkill_timeout", ctx),
        source=where,
    )
    ctx.nodes.append(spec)


def _seconds(element: Element, attribute: str, ctx: _Context) -> float | None:
    text = ctx.optional(element, attribute)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0.0:
        raise LaunchError(f"{element.where}: {attribute}='{text}' must be a non-negative number of seconds")
    return value


def _command_line(element: Element, attribute: str, ctx: _Context) -> list[str]:
    """Split like ``ExecuteProcess._parse_cmdline``: text by shell rules, substitution values whole."""
    if attribute not in element.attrib:
        return []
    where = f"{element.where} <{element.tag} {attribute}>"
    scope = Scope(ctx.configurations, ctx.launch_file)
    result: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            result.append("".join(current))
            current.clear()

    for part in parse_template(element.attrib[attribute], where):
        if isinstance(part, Substitution):
            current.append(evaluate_part(part, scope, where))
            continue
        try:
            tokens = shlex.split(part)
        except ValueError as error:
            raise LaunchError(f"{where}: {error}") from None
        if not tokens:
            flush()
            continue
        if part[0].isspace():
            flush()
        current.append(tokens[0])
        if len(tokens) > 1:
            flush()
            result.extend(tokens[1:-1])
            current.append(tokens[-1])
        if part[-1].isspace():
            flush()
    flush()
    return result


def _parameters(elements: list[Element], ctx: _Context) -> list[Path | ParameterDict]:
    """Parameter files and inline parameters, in order; consecutive inline ones share a dict."""
    result: list[Path | ParameterDict] = []
    for element in elements:
        if "from" in element.attrib:
            check_attributes(element, {"from", "allow_substs"})
            check_children(element, set())
            if ctx.flag(element, "allow_substs", False):
                raise LaunchError(f"{element.where}: <param allow_substs='true'> is not supported")
            path = Path(ctx.sub(element, "from"))
            if not path.is_file():
                raise LaunchError(f"{element.where}: parameter file {path} does not exist")
            result.append(path.resolve())
        elif "name" in element.attrib:
            entry = _parameter_entry(element, ctx)
            if result and isinstance(result[-1], dict):
                deep_merge(result[-1], entry)
            else:
                result.append(entry)
        else:
            raise LaunchError(f"{element.where}: <param> needs a 'name' or a 'from' attribute")
    return result


def _parameter_entry(element: Element, ctx: _Context) -> ParameterDict:
    check_attributes(element, {"name", "value", "value-sep", "type"})
    check_children(element, {"param"})
    name = ctx.sub(element, "name")
    if element.children:
        if "value" in element.attrib or "type" in element.attrib:
            raise LaunchError(f"{element.where}: <param name='{name}'> has both a value and nested params")
        nested: ParameterDict = {}
        for child in element.children:
            deep_merge(nested, _parameter_entry(child, ctx))
        return {name: nested}
    require_attribute(element, "value")
    where = f"{element.where} <param name='{name}'>"
    scope = Scope(ctx.configurations, ctx.launch_file)
    raw = element.attrib["value"]
    separator = element.attrib.get("value-sep")
    items = raw.split(separator) if separator else [raw]
    texts = [substitute(item, scope, where) for item in items]
    value = parse_parameter_value(texts, element.attrib.get("type"), is_list=bool(separator),
                                                  where=where)
    return {name: value}


_ACTIONS: Mapping[str, Callable[[Element, _Context], None]] = {
    "arg": _arg,
    "let": _let,
    "node": _node,
    "include": _include,
    "group": _group,
    "push-ros-namespace": _push_ros_namespace,
    "push_ros_namespace": _push_ros_namespace,
}


def _assign_labels(nodes: list[NodeSpec]) -> None:
    """Unique output labels: exec_name, else the node's name with its namespace, else exec."""
    used: Counter[str] = Counter()
    for spec in nodes:
        base = spec.label or (spec.fully_qualified_name or "").lstrip("/") or Path(spec.executable).name
        used[base] += 1
        spec.label = base if used[base] == 1 else f"{base}-{used[base]}"


def parse_launch_file(path: str | Path, arguments: Mapping[str, str] | None = None) -> list[NodeSpec]:
    """Evaluate a launch file with command-line ``arguments`` (name -> value) into node specs.

    Raises ``LaunchError`` for missing required or unknown arguments, unsupported tags,
    attributes or substitutions, and bad values; starts nothing.
    """
    path = Path(path)
    given = dict(arguments or {})
    root = load_xml(path)
    declarations = declared_arguments(root)
    missing = [d for d in declarations if d.default is None and not d.conditional and d.name not in given]
    if missing:
        raise LaunchError(
            f"{path}: missing required launch argument(s): {', '.join(d.name for d in missing)} "
            f"(pass them as name:=value). Arguments of this file:\n{format_arguments(declarations)}"
        )
    ctx = _Context(configurations=dict(given), launch_file=path)
    _run_actions(root.children, ctx)
    unknown = sorted(set(given) - ctx.declared - {d.name for d in declarations})
    if unknown:
        raise LaunchError(
            f"{path}: unknown launch argument(s): {', '.join(unknown)}. "
            f"Arguments of this file:\n{format_arguments(declarations)}"
        )
    _assign_labels(ctx.nodes)
    names = Counter(spec.fully_qualified_name for spec in ctx.nodes if spec.name is not None)
    for name, count in names.items():
        if count > 1:
            logger.warning("%d nodes share the name %s; ROS 2 expects unique node names", count, name)
    return ctx.nodes


def find_launch_file(name: str | Path, package: str = "revqom") -> Path:
    """A launch file path, or a bare file name looked up in ``$(find-pkg-share package)/launch``."""
    path = Path(name)
    if path.is_file():
        return path
    if path.name == str(name):
        try:
            share = package_share_directory(package)
        except PackageNotFoundError as error:
            raise LaunchError(str(error)) from None
        candidate = share / "launch" / path.name
        if candidate.is_file():
            return candidate
        raise LaunchError(f"launch file '{name}' not found in {share / 'launch'}")
    raise LaunchError(f"launch file {path} does not exist")

