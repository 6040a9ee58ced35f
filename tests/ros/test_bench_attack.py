"""``revqom bench attack`` reduced to a few frames and two attacks, end to end: real fusion
nodes on loopback, the JSON's shape, and no forged message accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ATTACKS = ("stamp_future", "bit_flip")
FRAMES = 3


def test_a_reduced_attack_bench_accepts_no_forged_message(tmp_path: Path, ros_env: dict[str, str]) -> None:
    out = tmp_path / "attack"
    command = [sys.executable, "-m", "revqom_nodes.cli", "bench", "attack", "--out", str(out)]
    command += ["--frames", str(FRAMES), "--attacks", ",".join(ATTACKS), "--flood-rates", ""]
    done = subprocess.run(command, cwd=ROOT, env=ros_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert json.loads((out / "attack.json").read_text()) == result
    assert {p.name for p in out.iterdir()} >= {"fusion_signed.log", "fusion_unsigned.log", "frames.jsonl"}

    assert [a["name"] for a in result["attacks"]] == list(ATTACKS)
    for attack in result["attacks"]:
        assert set(attack) >= {
            "name",
            "legit_frames",
            "legit_frames_fused_full",
            "forged_accepted",
            "detections_changed",
            "rejected",
        }
        assert attack["legit_frames"] == FRAMES
        assert attack["forged_sent"] > 0 and attack["forged_accepted"] == 0, attack
        assert attack["accepted_minus_legit_bytes"] <= 0 and attack["forged_frames_published"] == 0, attack
        assert sum(attack["rejected"].values()) >= attack["forged_sent"], attack
    # clock_skew: legit slices read more than 2 s late when the machine starves the node
    assert set(result["attacks"][0]["rejected"]) <= {
        "unsigned",
        "unknown_signer",
        "bad_signature",
        "clock_skew",
    }
    assert result["baseline"]["rejected"] == {} and result["baseline"]["forged_sent"] == 0
    assert result["flood"] == []
    overhead = result["overhead"]
    assert set(overhead) >= {
        "bytes_per_slice",
        "bytes_per_frame",
        "sign_us",
        "verify_us",
        "decode_fuse_ms_signed",
        "decode_fuse_ms_unsigned",
    }
    per_slice = overhead["bytes_per_slice"]
    assert per_slice["signed"] - per_slice["unsigned"] == 72  # signer digest + r || s
    assert overhead["sign_us"] > 0 and overhead["verify_us"] > 0
    assert result["node_exit_codes"] == {"unsigned": 0, "signed": 0}
