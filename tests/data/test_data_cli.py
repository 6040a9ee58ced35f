"""``revqom data {synth,stats,to-bag}`` end to end, on tiny inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from revqom_nodes.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict | None]:
    status = main(argv)
    out = capsys.readouterr().out
    return status, (json.loads(out) if out.strip() else None)


def test_synth_stats_to_bag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, bag = tmp_path / "dair", tmp_path / "bag"
    status, summary = _run(
        [
            "data",
            "synth",
            "--out",
            str(root),
            "--frames",
            "2",
            "--seed",
            "3",
            "--scenes",
            "2",
            "--vehicle-beams",
            "16",
            "--infrastructure-rings",
            "30",
            "--no-progress",
        ],
        capsys,
    )
    assert status == 0 and summary is not None
    assert (summary["frames"], summary["scenes"], summary["train"], summary["val"]) == (2, 2, 1, 1)

    status, stats = _run(["data", "stats", str(root), "--no-progress"], capsys)
    assert status == 0 and stats is not None
    assert stats["frames"] == 2 and set(stats["points_per_sweep"]) == {"vehicle", "infrastructure"}
    assert {"objects_per_frame", "cooperation_fraction"} <= set(stats)
    status, small = _run(
        ["data", "stats", str(root), "--split", "val", "--x-range-m", "30", "--no-progress"], capsys
    )
    assert small["frames"] == 1 and small["eval_range_m"] == {"x": [-30.0, 30.0], "y": [-40.0, 40.0]}

    status, report = _run(
        ["data", "to-bag", str(root), str(bag), "--storage", "sqlite3", "--no-progress"], capsys
    )
    assert status == 0 and report is not None
    assert (report["frames"], report["skipped"], report["storage"]) == (2, 0, "sqlite3")
    assert (bag / "metadata.yaml").is_file()


def test_bad_input_is_an_error_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    status, _ = _run(["data", "stats", str(tmp_path / "missing"), "--no-progress"], capsys)
    assert status == 1 and "missing cooperative data_info" in caplog.text
    status, _ = _run(["data", "synth", "--out", str(tmp_path / "x"), "--frames", "0"], capsys)
    assert status == 1 and "frames must be >= 1" in caplog.text
    assert not (tmp_path / "x").exists()
    for bad in ("0.2,3", "300:100", "-5"):
        with pytest.raises(SystemExit):
            main(["data", "synth", "--out", str(tmp_path / "x"), "--frames", "1", "--partner-delay-ms", bad])
        assert "--partner-delay-ms" in capsys.readouterr().err
