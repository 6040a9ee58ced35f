"""The forged EncodedBEV messages of ``revqom bench attack`` (issue 13), without ROS.

An attacker on the DDS domain holds the model file (the codebook id is in every message), its
own CA and keys, and everything it has seen on the wire; an insider may hold a revoked or
expired certificate of the project CA, or a valid one that it uses for another identity. For
one cooperative frame (the legit, signed slices of the ego and the infrastructure, stamp ``S``,
sequence ``k``), ``Forger.attack`` builds one attack's messages, sent before the legit ones
(``before``) or after them (``after``), each on the topic of the agent it claims to be:

- ``phantom_patch``: the slices holding a 3 x 3-cell patch of one index triple 20 m ahead in
  the ego's map, as the infrastructure with the ego's pose, stamp and sequence;
- ``erasure``: one constant index triple in every cell (every slice), as the infrastructure
  at ``S`` and sequence ``k``, and its first slice again with sequence ``k + 1``;
- ``stamp_future``: one ego slice stamped ``S + 0.95 s`` (a later sequence);
- ``stamp_past``: one ego and one infrastructure slice stamped ``S - 2 s``;
- ``replay``: the previous frame's legit slices before, this frame's first slices again after;
- ``bit_flip``: a legit ego and infrastructure slice with one bit flipped (the field changes
  frame by frame: ``FLIP_FIELDS``);
- ``wrong_role``: the phantom's first slice with the vehicle role, signed by the
  infrastructure's valid key, and with the infrastructure role signed by the vehicle's;
- ``revoked`` / ``expired``: the phantom's first slice and a ``+0.95 s`` ego slice, signed by
  a revoked / an expired certificate of the project CA;
- ``unsigned``: the ego's whole map as the infrastructure, and an ego slice at ``S + 0.5 s``.

Every content attack (phantom, erasure, both stamp attacks, wrong role, unsigned) is sent in
the variants that make sense: unsigned, with a forged signature (the claimed agent's
certificate digest and 64 random bytes), and signed by the attacker's own key for that agent
id (a certificate of a CA nobody trusts).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from revqom_nodes.codec.slices import cell_order
from revqom_nodes.runtime.encoder import AgentEncoder
from revqom_nodes.runtime.frames import NS_PER_MS, SIGNATURE_BYTES, ReceivedSlice, signed_fields
from revqom_nodes.scenario.keys import RECORDINGS_NOT_BEFORE, SCENARIO_AGENTS, SCENARIO_DAYS, scenario_keys
from revqom_nodes.trust.canonical import DIGEST_BYTES, canonical_bytes
from revqom_nodes.trust.certificates import Role, certificate_digest
from revqom_nodes.trust.keydir import KeyDirectory, issue_agent, read_certificate, read_private_key, revoke
from revqom_nodes.trust.signing import sign_bytes

PATCH_CELLS = 3  # the phantom's patch is PATCH_CELLS x PATCH_CELLS cells
PATCH_AHEAD_M = 20.0  # centre of the phantom's patch, metres ahead of the ego (x), in its lane (y = 0)
STAMP_FUTURE_NS = 950 * NS_PER_MS
STAMP_PAST_NS = -2000 * NS_PER_MS
UNSIGNED_AHEAD_NS = 500 * NS_PER_MS
REVOKED_AGENT = "rsu_revoked"  # a roadside unit of the project CA whose certificate was revoked
EXPIRED_AGENT = "rsu_expired"  # one whose certificate expired (valid for a day, until yesterday)
FLIP_FIELDS = (
    "payload",
    "stamp",
    "position",
    "sequence",
    "first_cell",
    "signature",
    "signer_digest",
    "role",
)
ATTACKS = (
    "phantom_patch",
    "erasure",
    "stamp_future",
    "stamp_past",
    "replay",
    "bit_flip",
    "wrong_role",
    "revoked",
    "expired",
    "unsigned",
)


@dataclass(frozen=True)
class Credential:
    """A private key and the certificate digest (HashedId8) it signs as."""

    key: ec.EllipticCurvePrivateKey
    digest: bytes


@dataclass(frozen=True)
class Credentials:
    """What the bench signs with: ``legit`` and ``attacker`` (another CA's) by agent id, and one
    revoked and one expired certificate of the project CA."""

    legit: dict[str, Credential]
    attacker: dict[str, Credential]
    revoked: Credential
    expired: Credential


@dataclass(frozen=True)
class Sweep:
    """One agent's legit sweep: indices (Q, H, W) int64 and the sender's (4, 4) pose."""

    agent_id: str
    role: int
    frame_id: str
    T_world_from_lidar: np.ndarray
    indices: np.ndarray


class Frame(NamedTuple):
    """One cooperative frame as sent: its stamp and sequence and its legit, signed slices."""

    stamp_ns: int
    sequence: int
    ego: list[ReceivedSlice]
    infra: list[ReceivedSlice]


class Forged(NamedTuple):
    """One attack's messages for one frame: sent before and after the legit slices."""

    before: list[ReceivedSlice]
    after: list[ReceivedSlice]


def credential(directory: Path, agent_id: str) -> Credential:
    """The key and certificate digest of ``agent_id`` in the key directory ``directory``."""
    keys = KeyDirectory(directory)
    digest = certificate_digest(read_certificate(keys.agent_certificate(agent_id)))
    return Credential(read_private_key(keys.agent_key(agent_id)), digest)


def make_credentials(trust_dir: Path, attacker_dir: Path, *, now: dt.datetime) -> Credentials:
    """The scenario's keys in ``trust_dir`` (``scenario.keys``) plus a revoked and an expired
    (at ``now``) certificate of its CA; the attacker's own CA and agent keys in ``attacker_dir``."""
    scenario_keys(trust_dir)
    scenario_keys(attacker_dir)
    keys = KeyDirectory(trust_dir)
    for agent_id, not_before, days in (
        (REVOKED_AGENT, RECORDINGS_NOT_BEFORE, SCENARIO_DAYS),
        (EXPIRED_AGENT, now - dt.timedelta(days=2), 1.0),
    ):
        issue_agent(
            keys, agent_id=agent_id, role=Role.INFRASTRUCTURE, not_before=not_before, days=days, force=False
        )
    revoke(keys, agent_id=REVOKED_AGENT)
    return Credentials(
        legit={a: credential(trust_dir, a) for a in SCENARIO_AGENTS},
        attacker={a: credential(attacker_dir, a) for a in SCENARIO_AGENTS},
        revoked=credential(trust_dir, REVOKED_AGENT),
        expired=credential(trust_dir, EXPIRED_AGENT),
    )


def sign_as(message: ReceivedSlice, credential: Credential) -> ReceivedSlice:
    """``message`` signed with ``credential`` whatever it claims to be (``trust.Signer`` refuses
    to sign for another identity; an attacker's code does not)."""
    data = canonical_bytes(signed_fields(message), credential.digest)
    return dataclasses.replace(
        message, signer_digest=credential.digest, signature=sign_bytes(credential.key, data)
    )


def unsigned(message: ReceivedSlice) -> ReceivedSlice:
    """``message`` with an all-zero authenticator."""
    return dataclasses.replace(message, signer_digest=bytes(DIGEST_BYTES), signature=bytes(SIGNATURE_BYTES))


def forge_signature(message: ReceivedSlice, digest: bytes, rng: np.random.Generator) -> ReceivedSlice:
    """``message`` naming the certificate ``digest`` with 64 random bytes as its signature."""
    return dataclasses.replace(message, signer_digest=digest, signature=rng.bytes(SIGNATURE_BYTES))


def phantom_patch(indices: np.ndarray, triple: np.ndarray, row: int, col: int) -> np.ndarray:
    """(Q, H, W) indices with the PATCH_CELLS x PATCH_CELLS cells centred on (row, col) (clipped
    to the map) set to ``triple`` (Q,) -> a copy."""
    patched = indices.copy()
    half = PATCH_CELLS // 2
    _, height, width = indices.shape
    rows = slice(max(row - half, 0), min(row + half + 1, height))
    cols = slice(max(col - half, 0), min(col + half + 1, width))
    patched[:, rows, cols] = np.asarray(triple, dtype=indices.dtype)[:, None, None]
    return patched


def constant_map(shape: tuple[int, int, int], triple: np.ndarray) -> np.ndarray:
    """(Q, H, W) int64 indices holding ``triple`` (Q,) in every cell."""
    return np.broadcast_to(np.asarray(triple, np.int64)[:, None, None], shape).copy()


def most_common_triple(indices: np.ndarray) -> np.ndarray:
    """(Q,) the index triple found in most cells of (Q, H, W) ``indices`` (a map's background)."""
    triples, counts = np.unique(indices.reshape(indices.shape[0], -1).T, axis=0, return_counts=True)
    return triples[int(np.argmax(counts))]


def _flip_float(value: float, bit: int) -> float:
    (raw,) = struct.unpack("<Q", struct.pack("<d", value))
    (flipped,) = struct.unpack("<d", struct.pack("<Q", raw ^ (1 << bit)))
    return flipped


def _flip_byte(data: bytes, bit: int) -> bytes:
    flipped = bytearray(data)
    flipped[(bit // 8) % len(flipped)] ^= 1 << (bit % 8)
    return bytes(flipped)


def flip_bit(message: ReceivedSlice, field: str, bit: int) -> ReceivedSlice:
    """``message`` with bit ``bit`` of ``field`` (one of FLIP_FIELDS) flipped, as a corrupted or
    tampered copy would carry it on the wire (the pose as sent: ``position``)."""
    if field == "payload":
        return dataclasses.replace(message, payload=_flip_byte(bytes(message.payload), bit))
    if field in ("signature", "signer_digest"):
        return dataclasses.replace(message, **{field: _flip_byte(getattr(message, field), bit)})
    if field == "position":
        x, y, z = message.position
        return dataclasses.replace(message, position=(_flip_float(x, bit % 52), y, z))
    if field == "stamp":
        return dataclasses.replace(message, stamp_ns=message.stamp_ns ^ (1 << (bit % 24)))
    if field in ("sequence", "first_cell", "role"):
        width = 1 if field == "role" else 8
        return dataclasses.replace(message, **{field: getattr(message, field) ^ (1 << (bit % width))})
    raise ValueError(f"unknown field {field!r}; valid: {list(FLIP_FIELDS)}")


class Forger:
    """Builds the legit frames and every attack's messages for one model and key set.

    encoder: packs index maps into slices as the agents do; triple: (Q,) the phantom's index
    triple; patch_cell: (row, col) of the phantom's centre in the ego's grid; erasure_triple: (Q,).
    """

    def __init__(
        self,
        encoder: AgentEncoder,
        credentials: Credentials,
        *,
        triple: np.ndarray,
        patch_cell: tuple[int, int],
        erasure_triple: np.ndarray,
        seed: int = 0,
    ) -> None:
        self.encoder = encoder
        self.credentials = credentials
        self.triple = np.asarray(triple, np.int64)
        self.patch_cell = patch_cell
        self.erasure_triple = np.asarray(erasure_triple, np.int64)
        self.rng = np.random.default_rng(seed)
        self._plans: dict[str, Callable[[Sweep, Sweep, Frame, Frame | None], Forged]] = {
            "phantom_patch": self._phantom_patch,
            "erasure": self._erasure,
            "stamp_future": self._stamp_future,
            "stamp_past": self._stamp_past,
            "replay": self._replay,
            "bit_flip": self._bit_flip,
            "wrong_role": self._wrong_role,
            "revoked": self._insider("revoked"),
            "expired": self._insider("expired"),
            "unsigned": self._unsigned,
        }

    def map_messages(
        self,
        indices: np.ndarray,
        as_sweep: Sweep,
        *,
        T_world_from_lidar: np.ndarray,
        stamp_ns: int,
        sequence: int,
    ) -> list[ReceivedSlice]:
        """(Q, H, W) indices as ``as_sweep``'s agent sends them (unsigned), with the given pose."""
        return self.encoder.messages(
            self.encoder.pack(indices),
            agent_id=as_sweep.agent_id,
            role=as_sweep.role,
            frame_id=as_sweep.frame_id,
            T_world_from_lidar=T_world_from_lidar,
            stamp_ns=stamp_ns,
            sequence=sequence,
        )

    def legit(self, sweep: Sweep, *, stamp_ns: int, sequence: int) -> list[ReceivedSlice]:
        """The sweep's slices as its agent sends them, unsigned (its node signs them:
        ``runtime.security.sign_slice``)."""
        return self.map_messages(
            sweep.indices,
            sweep,
            T_world_from_lidar=sweep.T_world_from_lidar,
            stamp_ns=stamp_ns,
            sequence=sequence,
        )

    def variants(self, messages: Sequence[ReceivedSlice]) -> list[ReceivedSlice]:
        """Each message unsigned, with a forged signature of the agent it claims to be, and
        signed by the attacker's own key for that agent."""
        out = [unsigned(m) for m in messages]
        out += [forge_signature(m, self.credentials.legit[m.agent_id].digest, self.rng) for m in messages]
        out += [sign_as(m, self.credentials.attacker[m.agent_id]) for m in messages]
        return out

    def attack(self, name: str, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        """Attack ``name`` (one of ATTACKS) on ``frame``; ``previous``: the frame sent before (None
        for the first)."""
        try:
            plan = self._plans[name]
        except KeyError:
            raise ValueError(f"unknown attack {name!r}; valid: {list(ATTACKS)}") from None
        return plan(ego, infra, frame, previous)

    # ---- the attacks ----------------------------------------------------------------------
    def _phantom(self, ego: Sweep, infra: Sweep, frame: Frame) -> list[ReceivedSlice]:
        """The slices of the patched ego map that hold a patch cell."""
        patched = phantom_patch(ego.indices, self.triple, *self.patch_cell)
        messages = self.map_messages(
            patched,
            infra,
            T_world_from_lidar=ego.T_world_from_lidar,
            stamp_ns=frame.stamp_ns,
            sequence=frame.sequence,
        )
        _, height, width = patched.shape
        position = np.argsort(
            cell_order(height, width, self.encoder.interleave)
        )  # row-major cell -> position
        half = PATCH_CELLS // 2
        row, col = self.patch_cell
        rows, cols = np.mgrid[row - half : row + half + 1, col - half : col + half + 1]
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        cells = position[rows[inside] * width + cols[inside]]
        return [m for m in messages if np.any((cells >= m.first_cell) & (cells < m.first_cell + m.num_cells))]

    def _phantom_patch(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        return Forged(self.variants(self._phantom(ego, infra, frame)), [])

    def _erasure(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        erased = constant_map(infra.indices.shape, self.erasure_triple)
        messages = self.map_messages(
            erased,
            infra,
            T_world_from_lidar=infra.T_world_from_lidar,
            stamp_ns=frame.stamp_ns,
            sequence=frame.sequence,
        )
        other_sequence = dataclasses.replace(messages[0], sequence=frame.sequence + 1)
        return Forged(self.variants([*messages, other_sequence]), [])

    @staticmethod
    def _ego_slice(frame: Frame, offset_ns: int) -> ReceivedSlice:
        """The frame's first ego slice, unsigned, restamped by ``offset_ns`` with a later sequence."""
        return dataclasses.replace(
            unsigned(frame.ego[0]), stamp_ns=frame.stamp_ns + offset_ns, sequence=frame.sequence + 1
        )

    def _stamp_future(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        return Forged(self.variants([self._ego_slice(frame, STAMP_FUTURE_NS)]), [])

    def _stamp_past(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        past = [
            self._ego_slice(frame, STAMP_PAST_NS),
            dataclasses.replace(unsigned(frame.infra[0]), stamp_ns=frame.stamp_ns + STAMP_PAST_NS),
        ]
        return Forged(self.variants(past), [])

    def _replay(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        before = [] if previous is None else [*previous.infra, *previous.ego]
        return Forged(before, [dataclasses.replace(frame.infra[0]), dataclasses.replace(frame.ego[0])])

    def _bit_flip(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        field = FLIP_FIELDS[frame.sequence % len(FLIP_FIELDS)]
        bit = int(self.rng.integers(0, 1 << 16))
        flipped = [
            flip_bit(frame.infra[frame.sequence % len(frame.infra)], field, bit),
            flip_bit(frame.ego[frame.sequence % len(frame.ego)], field, bit),
        ]
        return Forged(flipped, [])

    def _wrong_role(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        claim = self._phantom(ego, infra, frame)[0]
        as_vehicle = dataclasses.replace(claim, role=ego.role)
        legit = self.credentials.legit
        return Forged(
            [
                *self.variants([as_vehicle]),
                sign_as(as_vehicle, legit[infra.agent_id]),  # the infrastructure's own key, another role
                sign_as(claim, legit[ego.agent_id]),  # the vehicle's valid key, claiming the infrastructure
            ],
            [],
        )

    def _insider(self, which: str) -> Callable[[Sweep, Sweep, Frame, Frame | None], Forged]:
        def plan(ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
            credential = getattr(self.credentials, which)
            claims = [self._phantom(ego, infra, frame)[0], self._ego_slice(frame, STAMP_FUTURE_NS)]
            return Forged([sign_as(m, credential) for m in claims], [])

        return plan

    def _unsigned(self, ego: Sweep, infra: Sweep, frame: Frame, previous: Frame | None) -> Forged:
        as_infra = self.map_messages(
            ego.indices,
            infra,
            T_world_from_lidar=ego.T_world_from_lidar,
            stamp_ns=frame.stamp_ns,
            sequence=frame.sequence,
        )
        return Forged([*as_infra, self._ego_slice(frame, UNSIGNED_AHEAD_NS)], [])
