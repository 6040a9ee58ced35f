"""A bag's agents as a launch file: one agent node per agent, one fusion node per ego.

ROS 2 XML launch files have no loop, so ``launch/scenario.launch.xml`` includes a launch file
written for the bag (``agents:=``, by default ``<bag>/agents.launch.xml``, which
``revqom data to-bag`` writes): a ``<group>`` per agent that includes ``launch/agent.launch.xml``
and one per ego that includes ``launch/fusion.launch.xml``, then the topic lists the replay waits
for and the recorder records (``<let>``, YAML flow lists: a ``value-sep`` splits a value before
substitution, so lists travel in ``$(var ...)`` as ``[a, b]``). The same file runs under ``ros2 launch``
and the project's runner (docs/design.md, "Many agents at run time").

Egos are vehicles. Ego ``vehicle`` fuses in namespace ``/fusion`` (the 1 + 1 scenario's topics),
ego ``vehicle_K`` in ``/fusion_K``; each fuses its own map first, then every other agent's, in the
bag's order (the order ``revqom eval --ego`` fuses them in, ``DairV2XReader.ego_frame``).
An absent agent (``revqom demo --absent``: a unit that is down) gets no agent node; the fusion
nodes still expect it and receive nothing from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from revqom_nodes.data.bag import AGENTS_METADATA_KEY, agent_topics, bag_custom_data
from revqom_nodes.data.dairv2x import VEHICLE
from revqom_nodes.data.errors import DatasetError

AGENTS_LAUNCH_FILE = "agents.launch.xml"  # in the bag folder; scenario.launch.xml's default `agents`


def bag_agents(bag: str | Path) -> list[tuple[str, str]]:
    """(agent id, role) of each agent recorded in the bag's ``metadata.yaml`` (the ego first)."""
    agents = bag_custom_data(bag, AGENTS_METADATA_KEY)
    try:
        return [(str(a["agent_id"]), str(a["role"])) for a in agents]
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{bag}: malformed {AGENTS_METADATA_KEY!r} ({exc!r})") from None


def fusion_namespace(ego: str) -> str:
    """The fusion node's namespace of an ego: ``vehicle`` -> ``fusion``, ``vehicle_2`` -> ``fusion_2``."""
    return "fusion" + ego.removeprefix(VEHICLE)


def fusion_topics(ego: str) -> tuple[str, str]:
    """An ego's (detections topic, fusion status topic): ``/fusion/detections``,
    ``/fusion/fusion_status`` for ``vehicle``."""
    namespace = fusion_namespace(ego)
    return f"/{namespace}/detections", f"/{namespace}/fusion_status"


def check_egos(agents: list[tuple[str, str]], egos: list[str]) -> None:
    """Refuse an empty, repeated or unknown ego, or one that is not a vehicle (``DatasetError``)."""
    roles = dict(agents)
    vehicles = [a for a, role in agents if role == VEHICLE]
    if not egos or len(set(egos)) != len(egos):
        raise DatasetError(f"egos must name distinct vehicles, got {egos} (vehicles: {vehicles})")
    for ego in egos:
        if roles.get(ego) != VEHICLE:
            raise DatasetError(f"ego {ego!r} is not a vehicle of this scenario (vehicles: {vehicles})")


def check_absent(agents: list[tuple[str, str]], egos: list[str], absent: Sequence[str]) -> None:
    """Refuse an absent agent that is an ego or not an agent of this scenario (``DatasetError``)."""
    others = [a for a, _ in agents if a not in egos]
    if not set(absent) <= set(others):
        raise DatasetError(f"absent agents must be agents other than the egos ({others}), got {list(absent)}")


def _yaml_list(items: list[str]) -> str:
    """A YAML flow list, which a parameter value is read as (launch_ros and the revqom runner)."""
    return f"[{', '.join(items)}]"


def _include(file: str, arguments: dict[str, str]) -> str:
    args = "".join(f"      <arg name={quoteattr(k)} value={quoteattr(v)}/>\n" for k, v in arguments.items())
    include = f'<include file="$(find-pkg-share revqom)/launch/{file}">'
    return f"  <group>\n    {include}\n{args}    </include>\n  </group>\n"


def agents_launch_xml(agents: list[tuple[str, str]], egos: list[str], absent: Sequence[str] = ()) -> str:
    """The launch file of a scenario with these (agent id, role), egos and absent agents, which
    run no agent node (module docstring)."""
    check_egos(agents, egos)
    check_absent(agents, egos, absent)
    ids = [agent_id for agent_id, _ in agents]
    running = [a for a in ids if a not in absent]
    encoded = [f"/{a}/encoded_bev" for a in ids]
    parts = [
        '<?xml version="1.0"?>\n',
        "<!-- Written by revqom (revqom_nodes/data/agents_launch.py) from the bag's agent list: one agent\n"
        f"     node per agent ({', '.join(ids)}) and one fusion node per ego ({', '.join(egos)}).\n"
        "     Included by scenario.launch.xml, whose launch arguments the included files read. -->\n",
        "<launch>\n",
    ]
    parts += [_include("agent.launch.xml", {"agent_id": a, "role": r}) for a, r in agents if a in running]
    for ego in egos:
        order = [ego, *(a for a in ids if a != ego)]
        parts.append(_include("fusion.launch.xml", {
            "ego": ego,
            "fusion_namespace": fusion_namespace(ego),
            "agent_ids": _yaml_list(order),
            "agent_topics": _yaml_list([f"/{a}/encoded_bev" for a in order]),
        }))
    lists = {
        "scenario_outputs": [f"/{a}/encoded_bev" for a in running] + [fusion_topics(e)[0] for e in egos],
        "scenario_encoded_bev": encoded,
        "scenario_agent_status": [f"/{a}/agent_status" for a in ids],
        "scenario_clouds": [agent_topics(a)[0] for a in ids],
        "scenario_detections": [fusion_topics(e)[0] for e in egos],
        "scenario_fusion_status": [fusion_topics(e)[1] for e in egos],
    }
    parts += [f"  <let name={quoteattr(k)} value={quoteattr(_yaml_list(v))}/>\n" for k, v in lists.items()]
    parts.append("</launch>\n")
    return "".join(parts)


def write_agents_launch(
    bag: str | Path, egos: list[str] | None = None, out: str | Path | None = None, absent: Sequence[str] = ()
) -> Path:
    """Write the launch file of ``bag``'s agents (egos: the first agent when None; ``absent``:
    agents without an agent node) to ``out`` (default ``<bag>/agents.launch.xml``); returns its path."""
    agents = bag_agents(bag)
    path = Path(out) if out is not None else Path(bag) / AGENTS_LAUNCH_FILE
    path.write_text(agents_launch_xml(agents, egos or [agents[0][0]], absent), encoding="utf-8")
    return path
