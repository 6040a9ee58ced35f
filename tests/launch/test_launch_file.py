"""Launch files evaluate into node specs with the semantics of ROS 2's XML launch format."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from revqom_nodes.launcher.file import find_launch_file, parse_launch_file
from revqom_nodes.launcher.substitutions import (
    LaunchError,
    Scope,
    Substitution,
    parse_template,
    substitute,
)
from revqom_nodes.share import PackageNotFoundError, package_share_directory

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = FIXTURES / "example.launch.xml"
REPO_ROOT = Path(__file__).resolve().parents[2]


def write_launch(tmp_path: Path, body: str, name: str = "test.launch.xml") -> Path:
    path = tmp_path / name
    path.write_text(f'<?xml version="1.0"?>\n<launch>\n{body}\n</launch>\n')
    return path


def node(tmp_path: Path, body: str, arguments: dict[str, str] | None = None):
    (spec,) = parse_launch_file(write_launch(tmp_path, body), arguments)
    return spec


def test_example_fixture_evaluates_like_ros2_launch(tmp_path: Path) -> None:
    nodes = parse_launch_file(EXAMPLE, {"bag": "/data/run 1.db3", "rate": "2"})
    assert [n.label for n in nodes] == ["vehicle/agent", "infrastructure/agent", "fusion", "replay"]
    vehicle, infra, fusion, replay = nodes
    assert (vehicle.package, vehicle.executable, vehicle.name, vehicle.namespace) == (
        "revqom", "agent_node", "agent", "/vehicle")
    assert infra.namespace == "/infrastructure"
    assert vehicle.parameters == [{"agent": "vehicle", "model": {"path": str(FIXTURES / "model.pt")}}]
    assert infra.remappings == [("points", "/infrastructure/lidar/points")]
    assert fusion.namespace is None and fusion.output == "screen"
    assert fusion.parameters == [
        FIXTURES / "fusion.param.yaml",
        {"fusion.max_age_ms": 150, "agents": ["vehicle", "infrastructure"]},
    ]
    assert fusion.ros_arguments == ["--log-level", "info"]
    assert replay.arguments == ["--bag", "/data/run 1.db3", "--tag", "two words"]
    assert replay.parameters == [{"rate": 2, "loop": False}]
    assert replay.env == {"REVQOM_REPLAY": "/data/run 1.db3"}
    assert replay.on_exit_shutdown and not fusion.on_exit_shutdown
    assert "example.launch.xml:" in replay.source


def test_command_line_and_parameter_files_follow_launch_ros(tmp_path: Path) -> None:
    vehicle, _, fusion, replay = parse_launch_file(EXAMPLE, {"bag": "b"})
    tail = vehicle.ros_command_line(tmp_path)
    assert tail[:5] == ["--ros-args", "-r", "__node:=agent", "-r", "__ns:=/vehicle"]
    assert tail[5] == "--params-file" and tail[-2:] == ["-r", "points:=/vehicle/lidar/points"]
    # name and namespace given: the generated file is keyed by the node's full name
    parameters = {"agent": "vehicle", "model": {"path": str(FIXTURES / "model.pt")}}
    assert yaml.safe_load(Path(tail[6]).read_text()) == {"/vehicle/agent": {"ros__parameters": parameters}}
    tail = fusion.ros_command_line(tmp_path)
    assert tail[:4] == ["--ros-args", "--log-level", "info", "--ros-args"]
    files = [tail[i + 1] for i, a in enumerate(tail) if a == "--params-file"]
    assert files[0] == str(FIXTURES / "fusion.param.yaml")  # the user's file first, in file order
    assert yaml.safe_load(Path(files[1]).read_text()) == {
        "/**": {"ros__parameters": {"fusion.max_age_ms": 150, "agents": ["vehicle", "infrastructure"]}}
    }
    assert replay.ros_command_line(tmp_path)[:5] == ["--bag", "b", "--tag", "two words", "--ros-args"]


def test_conditions_drop_actions() -> None:
    nodes = parse_launch_file(EXAMPLE, {"bag": "b", "use_infrastructure": "FALSE"})
    assert [n.label for n in nodes] == ["vehicle/agent", "fusion", "replay"]


@pytest.mark.parametrize(("condition", "kept"), [
    ('if="1"', True), ('if="True"', True), ('if="0"', False),
    ('unless="true"', False), ('unless="0"', True),
])
def test_if_unless_values(tmp_path: Path, condition: str, kept: bool) -> None:
    path = write_launch(tmp_path, f'<node pkg="p" exec="e" {condition}/>')
    assert len(parse_launch_file(path)) == int(kept)


def test_non_boolean_condition_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="'yes' is not a boolean"):
        parse_launch_file(write_launch(tmp_path, '<node pkg="p" exec="e" if="yes"/>'))


def test_missing_required_argument_is_listed(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"missing required launch argument\(s\): bag") as error:
        parse_launch_file(EXAMPLE, {})
    assert "rate (default: '1.0')" in str(error.value)


def test_unknown_argument_is_refused() -> None:
    with pytest.raises(LaunchError, match=r"unknown launch argument.*: bogus"):
        parse_launch_file(EXAMPLE, {"bag": "b", "bogus": "1"})


def test_argument_of_an_included_file_may_be_given(tmp_path: Path) -> None:
    # `agent` is declared by the included file: it is a known argument of the launch
    nodes = parse_launch_file(EXAMPLE, {"bag": "b", "model_path": "/m.pt"})
    assert len(nodes) == 4


def test_choices_are_enforced() -> None:
    with pytest.raises(LaunchError, match="valid choices are: debug, info, warn"):
        parse_launch_file(EXAMPLE, {"bag": "b", "log_level": "loud"})


@pytest.mark.parametrize("tag", ["executable", "timer", "set_parameter", "composable_node", "set_env"])
def test_unsupported_tag_is_refused_with_its_name_and_line(tmp_path: Path, tag: str) -> None:
    path = write_launch(tmp_path, f'  <arg name="a" default="1"/>\n  <{tag} name="x"/>')
    with pytest.raises(LaunchError, match=rf"{path}:4: launch tag <{tag}> is not supported"):
        parse_launch_file(path)


def test_unsupported_attribute_and_child_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="launch-prefix of <node> not supported"):
        node(tmp_path, '<node pkg="p" exec="e" launch-prefix="gdb -ex run"/>')
    with pytest.raises(LaunchError, match="<remap_all> inside <node> is not supported"):
        node(tmp_path, '<node pkg="p" exec="e"><remap_all/></node>')
    with pytest.raises(LaunchError, match="respawn='true'> is not supported"):
        node(tmp_path, '<node pkg="p" exec="e" respawn="true"/>')


@pytest.mark.parametrize("text", ["$(command ls)", "$(eval 1+1)", "$(find-pkg-prefix revqom)"])
def test_unsupported_substitution_is_refused(tmp_path: Path, text: str) -> None:
    name = text[2:].split(" ")[0].rstrip(")")
    with pytest.raises(LaunchError, match=rf"test.launch.xml:3 <let value>: substitution \$\({name} "):
        parse_launch_file(write_launch(tmp_path, f'<let name="x" value="{text}"/>'))


def test_substitution_grammar() -> None:
    assert parse_template("a$(var x)b", "w") == ("a", Substitution("var", (("x",),)), "b")
    nested = parse_template("$(var $(var which))", "w")
    assert nested == (Substitution("var", ((Substitution("var", (("which",),)),),)),)
    scope = Scope({"which": "b", "b": "B", "x": "X"}, Path("/l/f.launch.xml"))
    assert substitute("[$(var $(var which))]", scope, "w") == "[B]"
    assert substitute(r"\$(var x) $(var x)", scope, "w") == "$(var x) X"
    assert substitute("$(env REVQOM_TEST_UNSET_VARIABLE 'a b')|$(env REVQOM_TEST_UNSET_VARIABLE '')", scope,
                      "w") == "a b|"
    assert substitute("$(dirname)/x", scope, "w") == "/l/x"
    for bad in ["$(var x", "$(var (x))", "$()"]:
        with pytest.raises(LaunchError, match="w: "):
            parse_template(bad, "w")
    with pytest.raises(LaunchError, match="launch configuration 'nope' does not exist"):
        substitute("$(var nope)", scope, "w")
    with pytest.raises(LaunchError, match="environment variable 'REVQOM_TEST_UNSET_VARIABLE' is not set"):
        substitute("$(env REVQOM_TEST_UNSET_VARIABLE)", scope, "w")


def test_env_substitution_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REVQOM_TEST_NS", "robot")
    spec = node(tmp_path, '<node pkg="p" exec="e" namespace="$(env REVQOM_TEST_NS)"/>')
    assert spec.namespace == "/robot"


def test_group_scoping_of_lets_and_namespaces(tmp_path: Path) -> None:
    body = """
  <let name="x" value="outer"/>
  <group>
    <let name="x" value="inner"/>
    <push-ros-namespace namespace="a"/>
    <push-ros-namespace namespace="b"/>
    <node pkg="p" exec="e" name="n1" args="$(var x)"/>
    <node pkg="p" exec="e" name="n2" namespace="/abs"/>
    <node pkg="p" exec="e" name="n3" namespace="rel"/>
  </group>
  <node pkg="p" exec="e" name="n4" args="$(var x)"/>
  <group scoped="false">
    <let name="x" value="leaked"/>
    <push_ros_namespace namespace="c"/>
  </group>
  <node pkg="p" exec="e" name="n5" args="$(var x)"/>
  <group forwarding="false">
    <keep name="y" value="$(var x)"/>
    <node pkg="p" exec="e" name="n6" args="$(var y)"/>
  </group>
  <group forwarding="false"><node pkg="p" exec="e" args="$(var x)"/></group>
"""
    path = write_launch(tmp_path, body)
    with pytest.raises(LaunchError, match="launch configuration 'x' does not exist"):
        parse_launch_file(path)
    path = write_launch(tmp_path, body.replace('<group forwarding="false"><node', '<group if="0"><node'))
    n1, n2, n3, n4, n5, n6 = parse_launch_file(path)
    assert (n1.arguments, n1.namespace, n1.fully_qualified_name) == (["inner"], "/a/b", "/a/b/n1")
    assert n2.namespace == "/abs" and n3.namespace == "/a/b/rel"
    assert (n4.arguments, n4.namespace) == (["outer"], None)
    assert (n5.arguments, n5.namespace) == (["leaked"], "/c")
    assert (n6.arguments, n6.namespace) == (["leaked"], None)  # not forwarded: ros_namespace dropped too


def test_include_passes_arguments_and_is_not_scoped(tmp_path: Path) -> None:
    write_launch(tmp_path, '<arg name="who"/>\n<let name="set_inside" value="$(var who)"/>\n'
                 '<node pkg="p" exec="e" name="$(var who)"/>', "child.launch.xml")
    path = write_launch(tmp_path, """
  <include file="$(dirname)/child.launch.xml"><arg name="who" value="first"/></include>
  <node pkg="p" exec="e" name="after" args="$(var set_inside)"/>
  <group><include file="$(dirname)/child.launch.xml"><arg name="who" value="second"/></include></group>
""")
    first, after, second = parse_launch_file(path)
    assert (first.name, after.arguments, second.name) == ("first", ["first"], "second")


def test_include_errors(tmp_path: Path) -> None:
    write_launch(tmp_path, '<arg name="who"/>', "child.launch.xml")
    with pytest.raises(LaunchError, match=r"needs argument\(s\) who"):
        parse_launch_file(write_launch(tmp_path, '<include file="$(dirname)/child.launch.xml"/>'))
    with pytest.raises(LaunchError, match="does not exist"):
        parse_launch_file(write_launch(tmp_path, '<include file="$(dirname)/none.launch.xml"/>'))
    with pytest.raises(LaunchError, match="only XML launch files"):
        parse_launch_file(write_launch(tmp_path, '<include file="$(dirname)/other.launch.py"/>'))
    loop = write_launch(tmp_path, '<include file="$(dirname)/loop.launch.xml"/>', "loop.launch.xml")
    with pytest.raises(LaunchError, match="nested deeper"):
        parse_launch_file(loop)


def test_parameter_typing(tmp_path: Path) -> None:
    path = write_launch(tmp_path, """<arg name="n" default="7"/><node pkg="p" exec="e">
      <param name="i" value="3"/><param name="f" value="0.5"/><param name="b" value="True"/>
      <param name="s" value="abc"/><param name="empty" value=""/><param name="forced" value="1.0" type="str"/>
      <param name="ints" value="[1, 2]"/><param name="floats" value="1.5;2.5" value-sep=";"/>
      <param name="via_var" value="$(var n)"/>
    </node>""")
    (spec,) = parse_launch_file(path)
    assert spec.parameters == [{"i": 3, "f": 0.5, "b": True, "s": "abc", "empty": "", "forced": "1.0",
                                "ints": [1, 2], "floats": [1.5, 2.5], "via_var": 7}]
    for bad, message in [('value="[1, a]"', "one type"), ('value="{a: 1}"', "not a scalar"),
                         ('value="x" type="int"', "not an int"), ('value="1" type="list"', "not supported")]:
        with pytest.raises(LaunchError, match=message):
            node(tmp_path, f'<node pkg="p" exec="e"><param name="p" {bad}/></node>')
    with pytest.raises(LaunchError, match=r"parameter file .* does not exist"):
        node(tmp_path, '<node pkg="p" exec="e"><param from="$(dirname)/none.yaml"/></node>')


def test_names_and_labels(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match="invalid node name '1bad'"):
        node(tmp_path, '<node pkg="p" exec="e" name="1bad"/>')
    with pytest.raises(LaunchError, match="invalid namespace"):
        node(tmp_path, '<node pkg="p" exec="e" namespace="a b"/>')
    path = write_launch(tmp_path, '<node pkg="p" exec="tool"/><node pkg="p" exec="tool"/>'
                        '<node pkg="p" exec="x" exec_name="custom"/>')
    assert [n.label for n in parse_launch_file(path)] == ["tool", "tool-2", "custom"]


def test_malformed_xml_and_wrong_root(tmp_path: Path) -> None:
    bad = tmp_path / "bad.launch.xml"
    bad.write_text("<launch>\n<node pkg='p'\n</launch>")
    with pytest.raises(LaunchError, match=r"bad\.launch\.xml:3: malformed XML"):
        parse_launch_file(bad)
    bad.write_text("<root/>")
    with pytest.raises(LaunchError, match="root element must be <launch>"):
        parse_launch_file(bad)


def test_find_pkg_share_prefers_the_checkout_then_the_ament_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert package_share_directory("revqom") == REPO_ROOT  # running from the checkout
    prefix = tmp_path / "prefix"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "other_pkg").touch()
    (prefix / "share" / "other_pkg" / "launch").mkdir(parents=True)
    (prefix / "share" / "other_pkg" / "launch" / "a.launch.xml").write_text("<launch/>")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    share = prefix / "share" / "other_pkg"
    assert package_share_directory("other_pkg") == share
    assert find_launch_file("a.launch.xml", "other_pkg") == share / "launch" / "a.launch.xml"
    with pytest.raises(PackageNotFoundError, match="package 'missing_pkg' not found"):
        package_share_directory("missing_pkg")
    with pytest.raises(LaunchError, match="package 'missing_pkg' not found"):
        find_launch_file("a.launch.xml", "missing_pkg")
    with pytest.raises(LaunchError, match=r"launch file 'b\.launch\.xml' not found"):
        find_launch_file("b.launch.xml", "other_pkg")
