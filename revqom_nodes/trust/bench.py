"""``revqom bench trust``: cost of signing and verifying EncodedBEV slices, as one JSON object.

Compares ECDSA P-256 (64-byte ``r || s``; DER sizes reported too) with Ed25519 on the same
canonical bytes of ``--slices`` slices of ``--payload-bytes`` random payload each, timing each
call (µs, p50 and p95) with the two algorithms interleaved slice by slice, then the full
path revqom uses (``Signer.sign`` and ``Verifier.verify``: canonical bytes, checks, ECDSA).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _quantiles_us(seconds: list[float]) -> dict[str, float]:
    p50, p95 = np.percentile(np.array(seconds) * 1e6, [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1)}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _slices(count: int, payload_bytes: int) -> list[Any]:
    from revqom_nodes.trust.canonical import SliceFields

    now_s = time.time_ns() // 1_000_000_000
    return [
        SliceFields(
            stamp_sec=now_s,
            stamp_nanosec=i * 1000,
            frame_id="infrastructure_lidar",
            agent_id="infrastructure",
            role=1,
            sequence=i,
            position=(10.0, -3.5, 1.8),
            orientation=(0.0, 0.0, 0.38, 0.92),
            height=100,
            width=50,
            cell_size_m=0.8,
            codebook_size=64,
            num_quantizers=3,
            codebook_id="0" * 64,
            encoding=0,
            slice_index=i % 10,
            num_slices=10,
            first_cell=(i % 10) * 533,
            num_cells=533,
            interleave=2,
            payload=os.urandom(payload_bytes),
        )
        for i in range(count)
    ]


def run_bench(count: int, payload_bytes: int) -> dict[str, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    from revqom_nodes.trust.canonical import canonical_bytes
    from revqom_nodes.trust.certificates import (
        Role,
        create_ca,
        generate_key,
        issue_certificate,
        read_agent_certificate,
    )
    from revqom_nodes.trust.signing import AUTHENTICATOR_BYTES, Signer, Verifier, sign_bytes, verify_bytes
    from revqom_nodes.trust.store import TrustStore

    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    ca_key, agent_key = generate_key(), generate_key()
    ca = create_ca(ca_key, name="bench CA", not_before=now, days=30)
    certificate = issue_certificate(
        ca_key,
        ca,
        agent_key.public_key(),
        agent_id="infrastructure",
        role=Role.INFRASTRUCTURE,
        not_before=now,
        days=7,
    )
    agent = read_agent_certificate(certificate, ca)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_public, p256_public = ed_key.public_key(), agent_key.public_key()

    signer = Signer(agent_key, agent)
    verifier = Verifier(TrustStore(ca, {agent.digest: agent}, frozenset(), signer))
    slices = _slices(count, payload_bytes)
    times: dict[str, list[float]] = {
        k: [] for k in ("canonical", "p256_sign", "p256_verify", "ed_sign", "ed_verify", "sign", "verify")
    }
    der_sizes = set()
    for fields in slices:
        elapsed, data = _timed(lambda f=fields: canonical_bytes(f, agent.digest))
        times["canonical"].append(elapsed)
        elapsed, signature = _timed(lambda d=data: sign_bytes(agent_key, d))
        times["p256_sign"].append(elapsed)
        elapsed, ed_signature = _timed(lambda d=data: ed_key.sign(d))
        times["ed_sign"].append(elapsed)
        elapsed, ok = _timed(lambda d=data, s=signature: verify_bytes(p256_public, s, d))
        times["p256_verify"].append(elapsed)
        assert ok
        elapsed, _ = _timed(lambda d=data, s=ed_signature: ed_public.verify(s, d))
        times["ed_verify"].append(elapsed)
        elapsed, authenticator = _timed(lambda f=fields: signer.sign(f))
        times["sign"].append(elapsed)
        elapsed, verdict = _timed(lambda f=fields, a=authenticator: verifier.verify(f, a))
        times["verify"].append(elapsed)
        assert verdict.accepted
        der_sizes.add(len(agent_key.sign(data, ec.ECDSA(hashes.SHA256()))))
    verify_p50_us = _quantiles_us(times["verify"])["p50"]
    return {
        "slices": count,
        "payload_bytes": payload_bytes,
        "canonical_bytes": len(canonical_bytes(slices[0], agent.digest)),
        "canonical_us": _quantiles_us(times["canonical"]),
        "algorithms": {
            "ecdsa_p256": {
                "sign_us": _quantiles_us(times["p256_sign"]),
                "verify_us": _quantiles_us(times["p256_verify"]),
                "signature_bytes": 64,
                "signature_bytes_der": sorted(der_sizes),
            },
            "ed25519": {
                "sign_us": _quantiles_us(times["ed_sign"]),
                "verify_us": _quantiles_us(times["ed_verify"]),
                "signature_bytes": 64,
            },
        },
        "chosen": "ecdsa_p256",
        "signed_slice": {
            "sign_us": _quantiles_us(times["sign"]),
            "verify_us": _quantiles_us(times["verify"]),
            "verifications_per_s_one_core": round(1e6 / verify_p50_us),
        },
        "authenticator_bytes": AUTHENTICATOR_BYTES,
    }


def _run(args: argparse.Namespace) -> int:
    print(json.dumps(run_bench(args.slices, args.payload_bytes)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("trust", help="sign/verify cost per slice: ECDSA P-256 against Ed25519")
    parser.add_argument("--slices", type=int, default=2000, help="slices signed and verified per algorithm")
    parser.add_argument("--payload-bytes", type=int, default=1100, help="payload bytes per slice")
    parser.set_defaults(run=_run)
