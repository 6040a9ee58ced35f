"""docs/wire-format.md and the code agree: every ``wire-example`` block in the doc decodes as stated."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from revqom_nodes.codec.context import ContextTables
from revqom_nodes.codec.errors import WireFormatError
from revqom_nodes.codec.wire import Encoding, decode_payload, encode_payload

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def parse_examples() -> list[dict[str, str]]:
    examples = []
    for block in re.findall(r"```wire-example\n(.*?)```", DOC.read_text(), flags=re.S):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            match = re.match(r"(\w+):\s*(.*)", line)
            if match:
                key, value = match.groups()
                fields[key] = value
            elif key and line.strip():
                fields[key] += " " + line.strip()
        examples.append(fields)
    return examples


EXAMPLES = parse_examples()


def rows(text: str) -> np.ndarray:
    """``a b / c d`` -> [[a, b], [c, d]] int64."""
    return np.array([row.split() for row in text.split("/")], dtype=np.int64)


def test_doc_has_examples_of_every_encoding() -> None:
    assert {e["encoding"] for e in EXAMPLES} == {str(e.value) for e in Encoding}
    assert sum("error" in e for e in EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_doc_example(example: dict[str, str]) -> None:
    Q, H, W = int(example["num_quantizers"]), int(example["height"]), int(example["width"])
    K = int(example["codebook_size"])
    encoding = Encoding(int(example["encoding"]))
    payload = bytes.fromhex(example["payload"])
    tables = rows(example["frequency_tables"]) if "frequency_tables" in example else None
    context = None
    if "context_alphabet" in example:
        context = ContextTables(
            rows(example["context_alphabet"]), rows(example["context_counts"]), rows(example["escape_counts"])
        )
    kwargs = {
        "height": H,
        "width": W,
        "num_quantizers": Q,
        "codebook_size": K,
        "encoding": encoding,
        "frequency_tables": tables,
        "context_tables": context,
    }
    if "error" in example:
        with pytest.raises(WireFormatError, match=example["error"]):
            decode_payload(payload, **kwargs)
        return
    expected = np.array(example["indices"].split(), dtype=np.int64).reshape(Q, H, W)
    np.testing.assert_array_equal(decode_payload(payload, **kwargs), expected)
    assert encode_payload(expected, K, encoding, tables, context) == (payload, encoding)


def test_encoding_values_match_the_message_constants() -> None:
    msg = (DOC.parents[1] / "msg" / "EncodedBEV.msg").read_text()
    constants = dict(re.findall(r"uint8 ENCODING_(\w+) = (\d+)", msg))
    assert constants == {e.name: str(e.value) for e in Encoding}
