"""``revqom bench trust`` prints one JSON object with both algorithms' costs."""

from __future__ import annotations

import json

import pytest

from revqom_nodes.cli import main


def test_bench_trust_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "trust", "--slices", "20", "--payload-bytes", "100"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["algorithms"]) == {"ecdsa_p256", "ed25519"}
    for algorithm in result["algorithms"].values():
        assert algorithm["signature_bytes"] == 64
        assert 0 < algorithm["sign_us"]["p50"] <= algorithm["sign_us"]["p95"]
        assert 0 < algorithm["verify_us"]["p50"] <= algorithm["verify_us"]["p95"]
    assert result["canonical_bytes"] == 144 + 20 + 14 + 64 + 100
    assert result["authenticator_bytes"] == 72
