"""The flood benchmark's core costs: each forgery is refused for its own reason, and the flood's
forged slice passes the reception callback's checks into the intake (where the verify worker,
not the reception thread, refuses it)."""

from __future__ import annotations

from pathlib import Path

from revqom_nodes.scenario.flood import rejection_costs


def test_each_forgery_costs_its_own_rejection(tmp_path: Path) -> None:
    costs = rejection_costs(tmp_path, repeats=20)  # raises when a forgery is accepted or refused otherwise
    assert set(costs) == {"flood_reception", "unsigned", "unknown_signer", "bad_signature", "replayed"}
    for cost in costs.values():
        assert cost["us_per_message"] > 0 and cost["per_s"] > 0
