"""``revqom rsu --config FILE.yaml [--set name=value ...]``: a roadside unit without ROS.

Runs the infrastructure agent as a plain Python process on Cyclone DDS: it plays its sweeps
and poses from a DAIR-V2X-C root or a bag, encodes them as the agent node does and publishes
the same EncodedBEV messages on the same topic (``/<agent.id>/encoded_bev``), signed with the
agent's key when ``security.trust_dir`` is set. The settings: config/rsu.yaml (which names the
agent_node parameters that apply) and docs/rsu.md. The DDS domain is ``ROS_DOMAIN_ID``'s;
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` keeps it on loopback. A ROS fusion node on Fast DDS
receives it with type propagation off (config/fastdds.xml). Exits 0 once every sweep is sent.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from revqom_nodes.data.errors import DatasetError
    from revqom_nodes.model_file import ModelFileError
    from revqom_nodes.rsu.config import parse_overrides, resolve
    from revqom_nodes.rsu.unit import RoadsideUnit
    from revqom_nodes.runtime.errors import RuntimeConfigError

    try:
        unit = RoadsideUnit(resolve(args.config, parse_overrides(args.set)))
        unit.run()
    except (RuntimeConfigError, ModelFileError, DatasetError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rsu",
        help="run a roadside unit without ROS (Cyclone DDS) that plays a DAIR-V2X-C root or a bag",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE.yaml", help="settings (a mapping of dotted names)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one setting, e.g. --set source.rate=0.5 (value read as YAML); repeatable",
    )
    parser.set_defaults(run=_run)
