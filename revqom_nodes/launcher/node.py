"""A node of a launch file, evaluated: its spec, its parameters and its ROS command line.

The command line is built as ``launch_ros`` builds it::

    EXEC [args...] [--ros-args ros_args...] --ros-args [-r __node:=NAME] [-r __ns:=/NS]
         [--params-file FILE ...] [-r from:=to ...]

Inline ``<param>`` values are typed by YAML rules (``"3"`` -> 3, ``"true"`` -> True,
``"a,b"`` with ``value-sep=","`` -> ["a", "b"]) and written, in file order with the
parameter files, to temporary ``ros__parameters`` YAML files keyed ``/NS/NAME`` when the
node's name and namespace are both given, else ``/**``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from revqom_nodes.launcher.substitutions import LaunchError

Scalar = bool | int | float | str
ParameterValue = Scalar | list[Scalar]
ParameterDict = dict[str, "ParameterValue | ParameterDict"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMESPACE = re.compile(r"/|(/[A-Za-z_][A-Za-z0-9_]*)+")
_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def validate_name(name: str, where: str) -> None:
    """A ROS node name: letters, digits and underscores, not starting with a digit."""
    if not _NAME.fullmatch(name):
        raise LaunchError(f"{where}: invalid node name '{name}' (letters, digits, '_'; no leading digit)")


def validate_namespace(namespace: str, where: str) -> None:
    """An absolute ROS namespace of valid tokens."""
    if not _NAMESPACE.fullmatch(namespace):
        raise LaunchError(f"{where}: invalid namespace '{namespace}'")


def prefix_namespace(base: str | None, namespace: str | None) -> str | None:
    """``namespace`` under ``base`` unless absolute; absolute, no trailing '/'; None if both are."""
    if base is None and namespace is None:
        return None
    if namespace is None:
        combined = base or "/"
    elif not base or namespace.startswith("/"):
        combined = namespace
    else:
        combined = ("" if base == "/" else base) + "/" + namespace
    if combined != "/":
        combined = combined.rstrip("/")
    return combined if combined.startswith("/") else "/" + combined


def deep_merge(target: ParameterDict, update: ParameterDict) -> None:
    """Merge nested parameter dictionaries in place; later values win."""
    for key, value in update.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            deep_merge(current, value)
        else:
            target[key] = value


def _yaml_scalar(text: str, where: str) -> Scalar | list[Scalar]:
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list) and value and all(isinstance(v, (bool, int, float, str)) for v in value):
        return value
    raise LaunchError(f"{where}: value '{text}' is not a scalar or a non-empty list of scalars")


def _convert(text: str, type_name: str, where: str) -> Scalar:
    kind = _TYPES[type_name]
    if kind is str:
        return text
    if kind is bool:
        value = _yaml_scalar(text, where)
        if not isinstance(value, bool):
            raise LaunchError(f"{where}: '{text}' is not a bool")
        return value
    try:
        return kind(text)
    except ValueError:
        raise LaunchError(f"{where}: '{text}' is not {'an' if kind is int else 'a'} {type_name}") from None


def parse_parameter_value(
    texts: list[str], type_name: str | None, *, is_list: bool, where: str
) -> ParameterValue:
    """Type an evaluated ``<param value>`` (``texts`` has one item unless ``value-sep`` split it).

    ``type_name`` (``str``, ``int``, ``float``, ``bool``) forces the type of the value or of
    every item; lists must be uniform, as ROS parameter arrays are.
    """
    if type_name is not None and type_name not in _TYPES:
        supported = ", ".join(_TYPES)
        raise LaunchError(f"{where}: param type '{type_name}' is not supported (use one of {supported})")
    if type_name is not None:
        values = [_convert(t, type_name, where) for t in texts]
    else:
        values = [_yaml_scalar(t, where) for t in texts]
    if not is_list:
        value = values[0]
        if isinstance(value, list):
            _check_uniform(value, where)
        return value
    if any(isinstance(v, list) for v in values):
        raise LaunchError(f"{where}: items of a value-sep list must be scalars")
    _check_uniform(values, where)
    return values


def _check_uniform(values: list, where: str) -> None:
    if len({type(v) for v in values}) > 1:
        raise LaunchError(f"{where}: list items must all have one type, got {values}")


@dataclass
class NodeSpec:
    """A node to start, fully evaluated: what ``launch_ros`` turns into a command line.

    ``namespace`` is absolute or None (unspecified); ``parameters`` holds parameter files
    (absolute paths) and dictionaries of inline parameters, in file order; ``label``
    prefixes the node's output lines and is unique within one launch.
    """

    label: str
    package: str | None
    executable: str
    name: str | None
    namespace: str | None
    arguments: list[str] = field(default_factory=list)
    ros_arguments: list[str] = field(default_factory=list)
    parameters: list[Path | ParameterDict] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    output: str = "log"
    on_exit_shutdown: bool = False
    sigterm_timeout_s: float | None = None
    sigkill_timeout_s: float | None = None
    source: str = ""

    @property
    def fully_qualified_name(self) -> str | None:
        """``/ns/name`` (``/name`` without a namespace); None when the name is unspecified."""
        if self.name is None:
            return None
        return ("" if self.namespace in (None, "/") else self.namespace) + "/" + self.name

    def parameter_file_key(self) -> str:
        """The node key of generated parameter files (``launch_ros`` rule)."""
        if self.name is not None and self.namespace is not None:
            return str(self.fully_qualified_name)
        return "/**"

    def write_parameter_file(self, parameters: ParameterDict, path: Path) -> Path:
        """Write inline parameters as a ``ros__parameters`` YAML file."""
        document = {self.parameter_file_key(): {"ros__parameters": parameters}}
        path.write_text(yaml.safe_dump(document, default_flow_style=False, sort_keys=False))
        return path

    def ros_command_line(self, parameters_dir: Path) -> list[str]:
        """Everything after the executable; writes the inline parameter files to ``parameters_dir``."""
        tail = [*self.arguments]
        if self.ros_arguments:
            tail += ["--ros-args", *self.ros_arguments]
        tail.append("--ros-args")
        if self.name is not None:
            tail += ["-r", f"__node:={self.name}"]
        if self.namespace is not None:
            tail += ["-r", f"__ns:={self.namespace}"]
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", self.label)
        for index, parameters in enumerate(self.parameters):
            if isinstance(parameters, Path):
                path = parameters
            else:
                path = self.write_parameter_file(parameters, parameters_dir / f"{stem}.{index}.params.yaml")
            tail += ["--params-file", str(path)]
        for source, target in self.remappings:
            tail += ["-r", f"{source}:={target}"]
        return tail

    def describe(self) -> str:
        """A readable multi-line summary (for ``revqom launch --print``)."""
        lines = [f"[{self.label}] {self.package or '-'} {self.executable}  ({self.source})"]
        if self.name is not None or self.namespace is not None:
            lines.append(f"    node: {self.fully_qualified_name or '<default name>'} ns: {self.namespace}")
        for parameters in self.parameters:
            lines.append(f"    params: {parameters}")
        lines += [f"    remap: {a} -> {b}" for a, b in self.remappings]
        lines += [f"    env: {k}={v}" for k, v in self.env.items()]
        if self.arguments or self.ros_arguments:
            lines.append(f"    args: {self.arguments} ros_args: {self.ros_arguments}")
        if self.on_exit_shutdown:
            lines.append("    on_exit: shutdown")
        return "\n".join(lines)
