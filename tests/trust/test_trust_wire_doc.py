"""docs/wire-format.md "Signed slices" and the code agree: the worked example's canonical bytes,
hash, certificate digest and signature are recomputed and verified."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from revqom_nodes.trust.canonical import SliceFields, canonical_bytes
from revqom_nodes.trust.certificates import certificate_digest
from revqom_nodes.trust.signing import verify_bytes

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"
HEX = ("payload", "public_key", "signer_digest", "canonical", "signature")


def parse_example() -> dict[str, str]:
    (block,) = re.findall(r"```signed-slice-example\n(.*?)```", DOC.read_text(), flags=re.S)
    fields: dict[str, str] = {}
    key = ""
    for line in block.splitlines():
        match = re.match(r"(\w+):\s*(.*)", line)
        if match:
            key, fields[match.group(1)] = match.group(1), match.group(2)
        elif line.strip():
            fields[key] += "\n" + line.strip()
    return fields


EXAMPLE = parse_example()


def _fields() -> SliceFields:
    values: dict[str, object] = {}
    for name, annotation in SliceFields.__annotations__.items():
        text = EXAMPLE[name]
        if name in ("position", "orientation"):
            values[name] = tuple(float(v) for v in text.split())
        elif name == "cell_size_m":
            values[name] = float(text)
        elif name == "payload":
            values[name] = bytes.fromhex(text)
        elif annotation == "str":
            values[name] = text
        else:
            values[name] = int(text)
    return SliceFields(**values)  # type: ignore[arg-type]


def _hex(name: str) -> bytes:
    return bytes.fromhex(EXAMPLE[name])


def test_canonical_bytes_and_hash() -> None:
    data = canonical_bytes(_fields(), _hex("signer_digest"))
    assert data == _hex("canonical")
    assert hashlib.sha256(data).hexdigest() == EXAMPLE["sha256"]


def test_certificate_digest_and_public_key() -> None:
    certificate = x509.load_pem_x509_certificate(EXAMPLE["certificate"].encode())
    assert certificate_digest(certificate) == _hex("signer_digest")
    point = certificate.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert point == _hex("public_key")


def test_signature_verifies_and_a_flipped_bit_does_not() -> None:
    public_key = x509.load_pem_x509_certificate(EXAMPLE["certificate"].encode()).public_key()
    data, signature = _hex("canonical"), _hex("signature")
    assert verify_bytes(public_key, signature, data)  # type: ignore[arg-type]
    for bit in (0, 8 * len(signature) - 1):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not verify_bytes(public_key, bytes(flipped), data)  # type: ignore[arg-type]


def test_the_field_table_quotes_the_canonical_bytes() -> None:
    section = DOC.read_text().split("### Worked example")[-1].split("```signed-slice-example")[0]
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| (.+) \|$", section, flags=re.M)
    assert len(rows) == 20
    data = _hex("canonical")
    for offset, quoted in rows:
        groups = re.findall(r"`([0-9a-f .]+)`", quoted)
        shown = "".join(g for g in groups[: next((i for i, g in enumerate(groups) if "." in g), len(groups))])
        assert data[int(offset) :].hex().startswith(shown.replace(" ", "")), offset
    assert EXAMPLE["sha256"][:8] in section
