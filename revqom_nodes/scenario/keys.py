"""The key directory of a replayed scenario: a CA and one certificate per agent, valid from
before the recordings (the synthetic scenarios and DAIR-V2X are stamped in 2021, and validity
is checked at a slice's stamp). ``revqom demo`` and the network test bed make their own, so
that their runs are signed and authenticated (docs/security.md)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from revqom_nodes.trust.certificates import Role
from revqom_nodes.trust.keydir import KeyDirectory, init_ca, issue_agent

log = logging.getLogger(__name__)

ONE_PLUS_ONE = [("vehicle", "vehicle"), ("infrastructure", "infrastructure")]  # DAIR-V2X-C's (agent id, role)
SCENARIO_AGENTS = {agent_id: Role.from_label(role) for agent_id, role in ONE_PLUS_ONE}  # the same, as roles
RECORDINGS_NOT_BEFORE = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
SCENARIO_CA_NAME = "revqom scenario CA"
SCENARIO_DAYS = 3650.0  # CA and agents: replays of 2021 recordings, and looping ones, stay valid


def scenario_keys(directory: Path, agents: list[tuple[str, str]] = ONE_PLUS_ONE) -> Path:
    """A new CA and a key and certificate per (agent id, role) of the scenario in ``directory``
    (replacing what was there: each run gets its own keys); returns ``directory``."""
    keys = KeyDirectory(directory)
    init_ca(keys, name=SCENARIO_CA_NAME, not_before=RECORDINGS_NOT_BEFORE, days=SCENARIO_DAYS, force=True)
    for agent_id, role in agents:
        issue_agent(
            keys,
            agent_id=agent_id,
            role=Role.from_label(role),
            not_before=RECORDINGS_NOT_BEFORE,
            days=SCENARIO_DAYS,
            force=False,
        )
    log.info("scenario keys (CA and %s) in %s", ", ".join(a for a, _ in agents), directory)
    return directory
