"""``revqom keys {init,issue,list,revoke}``: the project CA, agent certificates and the
revocation list of one key directory (keydir.py), each command printing one JSON object."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_CA_NAME = "revqom project CA"
DEFAULT_CA_DAYS = 3650
DEFAULT_AGENT_DAYS = 365


def _not_before(text: str | None) -> dt.datetime:
    """``--not-before`` (ISO 8601 date or date and time, UTC unless it says otherwise); now if absent."""
    if text is None:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    when = dt.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _describe(agent: Any, *, revoked: bool, now: dt.datetime) -> dict[str, Any]:
    status = (
        "revoked"
        if revoked
        else "expired"
        if now > agent.not_after
        else ("not_yet_valid" if now < agent.not_before else "valid")
    )
    return {
        "agent_id": agent.agent_id,
        "role": agent.role.label,
        "digest": agent.digest.hex(),
        "not_before": agent.not_before.isoformat(),
        "not_after": agent.not_after.isoformat(),
        "status": status,
    }


def _init(args: argparse.Namespace) -> int:
    from revqom_nodes.trust.certificates import certificate_digest
    from revqom_nodes.trust.keydir import KeyDirectory, init_ca

    keys = KeyDirectory(Path(args.dir))
    ca = init_ca(
        keys, name=args.name, not_before=_not_before(args.not_before), days=args.days, force=args.force
    )
    print(
        json.dumps(
            {
                "ca_certificate": str(keys.ca_certificate),
                "ca_key": str(keys.ca_key),
                "digest": certificate_digest(ca).hex(),
                "not_before": ca.not_valid_before_utc.isoformat(),
                "not_after": ca.not_valid_after_utc.isoformat(),
            }
        )
    )
    return 0


def _issue(args: argparse.Namespace) -> int:
    from revqom_nodes.trust.certificates import Role
    from revqom_nodes.trust.keydir import KeyDirectory, issue_agent

    keys = KeyDirectory(Path(args.dir))
    agent = issue_agent(
        keys,
        agent_id=args.agent_id,
        role=Role.from_label(args.role),
        not_before=_not_before(args.not_before),
        days=args.days,
        force=args.force,
    )
    now = dt.datetime.now(dt.timezone.utc)
    print(
        json.dumps(
            {
                **_describe(agent, revoked=False, now=now),
                "certificate": str(keys.agent_certificate(agent.agent_id)),
                "key": str(keys.agent_key(agent.agent_id)),
            }
        )
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    from revqom_nodes.trust.store import load_trust_store

    store = load_trust_store(args.dir)
    now = dt.datetime.now(dt.timezone.utc)
    agents = sorted(store.certificates.values(), key=lambda a: a.agent_id)
    print(
        json.dumps(
            {
                "ca": store.ca_certificate.subject.rfc4514_string(),
                "agents": [_describe(a, revoked=a.digest in store.revoked, now=now) for a in agents],
            },
            indent=2,
        )
    )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from revqom_nodes.trust.errors import TrustError
    from revqom_nodes.trust.keydir import KeyDirectory, revoke

    try:
        digest = None if args.digest is None else bytes.fromhex(args.digest)
    except ValueError:
        raise TrustError(f"--digest must be 16 hexadecimal digits, got {args.digest!r}") from None
    agent = revoke(KeyDirectory(Path(args.dir)), agent_id=args.agent_id, digest=digest)
    print(json.dumps({"revoked": agent.agent_id, "digest": agent.digest.hex()}))
    return 0


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A refused or bad request ends the command with its message and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ValueError as exc:  # TrustError and bad --not-before dates
            log.error("%s", exc)
            return 1

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "keys", help="project CA, agent certificates and revocation (message signing)"
    )
    verbs = parser.add_subparsers(title="keys commands", metavar="VERB", required=True)

    def command(
        name: str, help: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        verb = verbs.add_parser(name, help=help)
        verb.add_argument("--dir", required=True, help="key directory (docs/security.md)")
        verb.set_defaults(run=_guarded(handler))
        return verb

    init = command("init", "create the project CA and an empty revocation list", _init)
    init.add_argument("--name", default=DEFAULT_CA_NAME, help="the CA's common name")
    init.add_argument("--days", type=float, default=DEFAULT_CA_DAYS, help="validity in days")
    init.add_argument("--not-before", help="start of validity, ISO 8601 (default: now)")
    init.add_argument("--force", action="store_true", help="replace an existing CA and delete its agents")

    issue = command("issue", "create an agent's key and a certificate signed by the CA", _issue)
    issue.add_argument("--agent-id", required=True, help="the agent id its messages carry")
    issue.add_argument("--role", required=True, choices=("vehicle", "infrastructure"))
    issue.add_argument("--days", type=float, default=DEFAULT_AGENT_DAYS, help="validity in days")
    issue.add_argument(
        "--not-before",
        help="start of validity, ISO 8601 (default: now; replayed "
        "recordings need a start before their stamps)",
    )
    issue.add_argument(
        "--force", action="store_true", help="revoke and replace the agent's key and certificate"
    )

    command("list", "print the CA and every agent certificate with its digest and status", _list)

    revoke = command("revoke", "add an agent certificate to the revocation list", _revoke)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--agent-id", help="the agent whose certificate to revoke")
    which.add_argument("--digest", help="the certificate's HashedId8, 16 hexadecimal digits")
