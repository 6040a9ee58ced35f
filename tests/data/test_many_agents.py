"""Many agents: 3 vehicles + 2 roadside units through the generator, the reader and the bag converter."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from revqom_nodes.cli import main
from revqom_nodes.data.bag import AGENTS_METADATA_KEY, TOPICS, convert_to_bag, lidar_frame
from revqom_nodes.data.dairv2x import OTHER_AGENTS_KEY, DairV2XReader
from revqom_nodes.data.errors import DatasetError
from revqom_nodes.data.synth_render import T_BASE_FROM_LIDAR
from revqom_nodes.data.synthetic import generate_dataset
from revqom_nodes.geometry import count_points_in_boxes, invert, transform_boxes
from tests.data.dair_fixtures import TINY, TINY_FRAMES, TINY_SCENES, TINY_SEED

AGENTS = [
    ("vehicle", "vehicle"),
    ("vehicle_1", "vehicle"),
    ("vehicle_2", "vehicle"),
    ("infrastructure", "infrastructure"),
    ("infrastructure_1", "infrastructure"),
]
SIDES = ["vehicle-side", "vehicle-side-1", "vehicle-side-2", "infrastructure-side", "infrastructure-side-1"]
MANY = replace(TINY, vehicles=3, rsus=2)
MAX_SPEED_MPS = 14.0  # fastest road user of the generator


def _files(root: Path, folder: str) -> dict[str, bytes]:
    paths = sorted(p for p in (root / folder).rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


@pytest.fixture(scope="module")
def many_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset's seed and scenes with 3 vehicles + 2 roadside units (read-only)."""
    root = tmp_path_factory.mktemp("many") / "dair"
    generate_dataset(root, TINY_FRAMES, TINY_SEED, scenes=TINY_SCENES, config=MANY, progress=False)
    return root


def test_layout_one_folder_per_agent(many_root: Path) -> None:
    assert sorted(p.name for p in many_root.iterdir() if p.is_dir()) == sorted(["cooperative", *SIDES])
    for side in SIDES:
        records = json.loads((many_root / side / "data_info.json").read_text())
        assert len(records) == TINY_FRAMES
        for record in records:
            assert (many_root / side / record["pointcloud_path"]).is_file()
            assert (many_root / side / record["label_lidar_std_path"]).is_file()
    for pair in json.loads((many_root / "cooperative/data_info.json").read_text()):
        others = pair[OTHER_AGENTS_KEY]
        assert [Path(o["pointcloud_path"]).parts[0] for o in others] == SIDES[1:3] + SIDES[4:]
        assert all((many_root / o["pointcloud_path"]).is_file() for o in others)
        assert set(others[-1]["system_error_offset"]) == {"delta_x", "delta_y"}


def test_first_vehicle_and_unit_are_the_one_plus_one_dataset(many_root: Path, tiny_root: Path) -> None:
    """The DAIR-V2X-C part is byte for byte the 1 + 1 dataset of the same seed; the cooperative
    labels hold more (what the other agents see too)."""
    for side in ("vehicle-side", "infrastructure-side"):
        assert _files(many_root, side) == _files(tiny_root, side)
    pairs = json.loads((many_root / "cooperative/data_info.json").read_text())
    base = json.loads((tiny_root / "cooperative/data_info.json").read_text())
    assert [{k: v for k, v in p.items() if k != OTHER_AGENTS_KEY} for p in pairs] == base
    many, one = DairV2XReader(many_root, "all"), DairV2XReader(tiny_root, "all")
    counts = [(len(a.boxes_world), len(b.boxes_world)) for a, b in zip(many, one, strict=True)]
    assert all(m >= o for m, o in counts) and any(m > o for m, o in counts)


def test_reader_returns_every_agent(many_root: Path) -> None:
    reader = DairV2XReader(many_root, "all")
    assert reader.agents == AGENTS
    for index, frame in enumerate(reader):
        assert [(a.agent_id, a.role) for a in frame.agents] == AGENTS
        assert reader.timestamps_us(index) == tuple(a.timestamp_us for a in frame.agents)
        assert len({a.timestamp_us for a in frame.agents}) == 5  # each sensor has its own clock
        ego_xy = frame.ego.T_world_from_lidar[:2, 3]
        for agent in frame.agents:
            assert agent.points.dtype == np.float32 and len(agent.points) > 500
            assert np.hypot(*(agent.T_world_from_lidar[:2, 3] - ego_xy)) < 100.0
        assert frame.agents[1].frame_id == frame.ego.frame_id  # a role's sides share its frame ids
    assert len(DairV2XReader(many_root, "train")) + len(DairV2XReader(many_root, "val")) == TINY_FRAMES


def test_poses_agree_with_clouds_and_labels(many_root: Path) -> None:
    """Each agent's labels, moved to the world through its pose, are cooperative boxes (parked and
    queued vehicles exactly, whatever the agent's stamp), and those boxes in the agent's frame hold
    its points."""
    exact = dict.fromkeys([a for a, _ in AGENTS], 0)
    for frame in DairV2XReader(many_root, "all"):
        for agent in frame.agents:
            world = transform_boxes(agent.T_world_from_lidar, agent.boxes)
            dist = np.linalg.norm(world[:, None, :2] - frame.boxes_world[None, :, :2], axis=-1)
            match = dist.min(axis=1) < 1e-6
            exact[agent.agent_id] += int(match.sum())
            boxes = frame.boxes_in(agent.T_world_from_lidar)[dist.argmin(axis=1)[match]]
            boxes[:, 3:6] += 0.2  # the range noise puts some hits just outside
            assert (count_points_in_boxes(agent.points, boxes) > 0).all()
    assert min(exact.values()) > 0


def test_cooperative_labels_come_from_every_agent(many_root: Path) -> None:
    """Each partner labels cooperative boxes that the ego's own sweep does not (the labels are the
    union over the agents), and the connected vehicles are labelled where their LiDAR is."""
    only_partner = dict.fromkeys([a for a, _ in AGENTS[1:]], 0)
    labelled_connected = 0
    for frame in DairV2XReader(many_root, "all"):
        ego = frame.ego
        by_ego = (
            np.linalg.norm(
                transform_boxes(ego.T_world_from_lidar, ego.boxes)[:, None, :2]
                - frame.boxes_world[None, :, :2],
                axis=-1,
            ).min(axis=0, initial=np.inf)
            < 1e-6
        )
        for agent in frame.agents[1:]:
            reach = MAX_SPEED_MPS * abs(agent.timestamp_us - ego.timestamp_us) * 1e-6 + 1e-6
            world = transform_boxes(agent.T_world_from_lidar, agent.boxes)
            dist = np.linalg.norm(world[:, None, :2] - frame.boxes_world[None, :, :2], axis=-1)
            only_partner[agent.agent_id] += int(((dist.min(axis=0, initial=np.inf) < reach) & ~by_ego).sum())
        for agent in frame.agents[1:3]:
            base_xy = (agent.T_world_from_lidar @ invert(T_BASE_FROM_LIDAR))[:2, 3]
            labelled_connected += int(np.hypot(*(frame.boxes_world[:, :2] - base_xy).T).min() < 1.0)
    assert min(only_partner.values()) > 0
    assert labelled_connected == 2 * TINY_FRAMES


def test_no_ego_has_its_own_body_as_a_label(many_root: Path) -> None:
    """Seen from each vehicle (``as_ego``), the ground truth holds every other connected vehicle's
    body that some agent labels, the first ego's included, and never its own."""
    vehicles = [a for a, role in AGENTS if role == "vehicle"]
    bodies = dict.fromkeys(vehicles, 0)
    for frame in DairV2XReader(many_root, "all"):
        for ego_id in vehicles:
            view = frame.as_ego(ego_id)
            assert view.ego.agent_id == ego_id and [a.agent_id for a in view.agents[1:]] == [
                a for a, _ in AGENTS if a != ego_id]
            for agent_id in vehicles:
                base_xy = (frame.agent(agent_id).T_world_from_lidar @ invert(T_BASE_FROM_LIDAR))[:2, 3]
                labelled = np.hypot(*(view.boxes_world[:, :2] - base_xy).T).min(initial=np.inf) < 1.0
                assert labelled == (agent_id != ego_id and agent_id in frame.bodies), (ego_id, agent_id)
        bodies.update({a: bodies[a] + 1 for a in frame.bodies})
    assert min(bodies.values()) > 0  # each vehicle's body is labelled in some frame


def test_ego_frame_pairs_each_partner_sweep_nearest_to_the_egos(many_root: Path) -> None:
    """Another ego's view takes each partner's sweep nearest in time to its own among all frames
    (as its fusion node pairs them); the first vehicle's view is the frame as the index pairs it."""
    reader = DairV2XReader(many_root, "all")
    stamps = {a: [reader[j].agent(a).timestamp_us for j in range(len(reader))] for a, _ in AGENTS}
    moved = 0
    for i in range(len(reader)):
        first = reader.ego_frame(i, "vehicle")
        assert [a.timestamp_us for a in first.agents] == list(reader.timestamps_us(i))
        view = reader.ego_frame(i, "vehicle_2")
        assert view.ego.timestamp_us == stamps["vehicle_2"][i]
        np.testing.assert_array_equal(view.boxes_world, reader[i].as_ego("vehicle_2").boxes_world)
        for agent in view.agents[1:]:
            gaps = [abs(t - view.ego.timestamp_us) for t in stamps[agent.agent_id]]
            assert abs(agent.timestamp_us - view.ego.timestamp_us) == min(gaps), agent.agent_id
            moved += agent.timestamp_us != stamps[agent.agent_id][i]
    assert moved > 0  # some partner's nearest sweep belongs to another frame


def test_many_agents_deterministic(tmp_path: Path, many_root: Path) -> None:
    again = generate_dataset(
        tmp_path / "again", TINY_FRAMES, TINY_SEED, scenes=TINY_SCENES, config=MANY, progress=False
    ).root
    for folder in ("cooperative", *SIDES):
        assert _files(again, folder) == _files(many_root, folder)


def test_partner_delay_holds_for_every_partner(tmp_path: Path) -> None:
    config = replace(MANY, partner_delay_ms=(300.0, 300.0))
    root = generate_dataset(tmp_path / "d", 2, TINY_SEED, config=config, progress=False).root
    for frame in DairV2XReader(root, "all"):
        assert [frame.ego.timestamp_us - a.timestamp_us for a in frame.agents[1:]] == [300_000] * 4


def test_agent_counts_are_checked(tmp_path: Path) -> None:
    for vehicles, rsus in ((0, 1), (1, 0), (1, 5)):
        with pytest.raises(ValueError, match="rsus"):
            generate_dataset(
                tmp_path / "x", 1, 0, config=replace(TINY, vehicles=vehicles, rsus=rsus), progress=False
            )
    assert not (tmp_path / "x").exists()
    assert (
        main(["data", "synth", "--out", str(tmp_path / "y"), "--frames", "1", "--rsus", "5", "--no-progress"])
        == 1
    )


def test_other_agents_outside_the_layout_is_an_error(many_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(many_root, root)
    path = root / "cooperative/data_info.json"
    pairs = json.loads(path.read_text())
    pairs[0][OTHER_AGENTS_KEY][0]["pointcloud_path"] = "lorry-side/velodyne/000000.pcd"
    path.write_text(json.dumps(pairs))
    with pytest.raises(DatasetError, match="no agent folder"):
        DairV2XReader(root, "all")


def _bag_topics_and_agents(bag: Path) -> tuple[dict[str, int], list[dict]]:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return counts, json.loads(metadata["custom_data"][AGENTS_METADATA_KEY])


def test_to_bag_writes_every_agent(many_root: Path, tiny_root: Path, tmp_path: Path) -> None:
    report = convert_to_bag(many_root, tmp_path / "many", progress=False)
    assert report.frames_written == TINY_FRAMES and report.messages == TINY_FRAMES * (5 * 3 + 2)
    counts, agents = _bag_topics_and_agents(tmp_path / "many")
    for agent_id, _ in AGENTS:
        assert counts[f"/{agent_id}/lidar/points"] == counts[f"/{agent_id}/pose"] == TINY_FRAMES
    assert counts["/tf"] == 5 * TINY_FRAMES
    assert [(a["agent_id"], a["role"]) for a in agents] == AGENTS
    assert agents[4] == {
        "agent_id": "infrastructure_1",
        "role": "infrastructure",
        "frame_id": lidar_frame("infrastructure_1"),
        "points_topic": "/infrastructure_1/lidar/points",
        "pose_topic": "/infrastructure_1/pose",
    }

    convert_to_bag(tiny_root, tmp_path / "one", progress=False)  # 1 + 1: the DAIR-V2X-C bag's topics
    counts, agents = _bag_topics_and_agents(tmp_path / "one")
    assert set(counts) == {topic for topic, _ in TOPICS.values()}
    assert [a["agent_id"] for a in agents] == ["vehicle", "infrastructure"]
    assert [a["frame_id"] for a in agents] == ["vehicle_lidar", "infrastructure_lidar"]
