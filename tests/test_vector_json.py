"""The JSONL export's vector text: the exact values, byte for byte the old restore path's output."""

from __future__ import annotations

import base64
import struct

import numpy as np
import orjson
import pytest

from batcher import vector_json
from batcher.vector_json import SPLIT_DIMENSIONS, BodyTemplates, VectorJson, block_texts, dumps_body
from jobs.vectors import VectorEncoding, Vectors, dumps_with_vectors, take_vectors
from tests.test_vectors import DIMS, answer, b64, float32_values


def _body(n: int) -> bytes:
    data = [{"object": "embedding", "index": i} for i in range(n)]
    return orjson.dumps({"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 2}})


def _block(dim: int, n: int, encoding: VectorEncoding) -> Vectors:
    values = [v for seed in range(n) for v in float32_values(dim, seed)]
    return Vectors(struct.pack(f"<{len(values)}f", *values), dim, encoding)


@pytest.mark.parametrize("dim", DIMS)
def test_float_answer_is_written_as_the_api_sent_it(dim: int) -> None:
    """A float answer's numbers read back as the very doubles the API sent, every dimension."""
    sent = orjson.dumps(answer([float32_values(dim, 1), float32_values(dim, 2)]))
    body = orjson.loads(sent)
    vectors = take_vectors(body)
    assert vectors is not None
    written = dumps_body(orjson.dumps(body), vectors, VectorJson())
    assert orjson.loads(written) == orjson.loads(sent)
    assert written == sent  # and as the same text: orjson's shortest double, as before


@pytest.mark.parametrize("dim", DIMS)
def test_base64_answer_is_written_back_byte_for_byte(dim: int) -> None:
    encoded = [b64(float32_values(dim, 3)), b64(float32_values(dim, 4))]
    sent = orjson.dumps(answer(list(encoded)))
    body = orjson.loads(sent)
    vectors = take_vectors(body)
    assert vectors is not None
    assert dumps_body(orjson.dumps(body), vectors, VectorJson()) == sent


@pytest.mark.parametrize("encoding", list(VectorEncoding))
@pytest.mark.parametrize("order", ["in order", "a line out of order", "blocks interleaved"])
def test_lines_of_a_packed_block_get_their_own_vectors(encoding: VectorEncoding, order: str) -> None:
    """However a block's lines arrive (the block widened whole or a line's rows alone), each line
    gets the text the one-line codec of ``jobs.vectors`` writes for it."""
    one, other = _block(16, 5, encoding), _block(16, 3, encoding)
    parts = [one.part(0, 2), one.part(2, 3), one.part(3, 5)]
    lines = {
        "in order": parts,
        "a line out of order": [parts[1], parts[0], parts[2]],
        "blocks interleaved": [parts[0], other.part(0, 1), parts[1], other.part(1, 3), parts[2]],
    }[order]
    pieces = VectorJson()
    for vectors in lines:
        body = _body(vectors.count)
        assert dumps_body(body, vectors, pieces) == dumps_with_vectors(body, vectors)


def test_float_text_reads_back_as_the_float32_values() -> None:
    """Values at float32's edges (tiny, huge, negative zero, subnormal) read back unchanged."""
    values = np.array([1e-45, -0.0, 3.4028235e38, -1.1754944e-38, 0.1, 1 / 3], dtype=np.float32)
    vectors = Vectors(values.tobytes(), len(values), VectorEncoding.FLOAT)
    read = orjson.loads(dumps_body(_body(1), vectors, VectorJson()))["data"][0]["embedding"]
    assert np.array(read, dtype=np.float64).tolist() == values.astype(np.float64).tolist()
    assert np.signbit(read[1])


def test_base64_text_is_the_stored_bytes() -> None:
    vectors = _block(8, 2, VectorEncoding.BASE64)
    read = orjson.loads(dumps_body(_body(2), vectors, VectorJson()))["data"]
    assert b"".join(base64.b64decode(d["embedding"]) for d in read) == vectors.data


def test_base64_is_made_by_pybase64() -> None:
    """pybase64 is a dependency: the stdlib fallback is only for environments installed before."""
    pybase64 = pytest.importorskip("pybase64")
    assert vector_json.b64encode is pybase64.b64encode


@pytest.mark.parametrize("dim", DIMS)
def test_base64_texts_are_the_standard_library_text(dim: int) -> None:
    """Each vector of a line's span in its block, as the stdlib's standard base64 with padding."""
    vectors = _block(dim, 4, VectorEncoding.BASE64)
    size = 4 * dim
    expected = [b'"%b"' % base64.b64encode(vectors.data[i * size : (i + 1) * size]) for i in (1, 2)]
    assert VectorJson().texts((vectors.data, dim, vectors.encoding), 1, 3) == expected


@pytest.mark.parametrize("dim", [1, 3, SPLIT_DIMENSIONS - 1, SPLIT_DIMENSIONS, SPLIT_DIMENSIONS + 1, 1536])
def test_a_block_of_floats_is_each_vector_as_orjson_writes_it(dim: int) -> None:
    """Whether the block is written by one call and cut apart or a call a vector, the text of
    each vector is orjson's of its doubles alone."""
    vectors = _block(dim, 5, VectorEncoding.FLOAT)
    doubles = vectors.matrix().astype(np.float64)
    expected = [orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) for row in doubles]
    assert block_texts(vectors.data, dim, VectorEncoding.FLOAT) == expected
    assert block_texts(vectors.data, dim, VectorEncoding.FLOAT, 2, 4) == expected[2:4]


@pytest.mark.parametrize("items", [0, 1, 2, 3])
def test_a_body_template_takes_as_many_vectors_as_it_has_items(items: int) -> None:
    """A body with fewer ``data`` items than vectors gets only as many (the old restore path's
    zip), one with more leaves the rest without ``embedding``; the same from a kept template."""
    vectors = _block(3, 2, VectorEncoding.FLOAT)
    body = _body(items)
    expected = dumps_with_vectors(body, vectors)
    templates = BodyTemplates()
    for _ in range(2):
        pieces = templates.pieces(body.decode(), 2)
        assert len(pieces) == min(items, 2) + 1
        assert (
            vector_json.fill(pieces, VectorJson().texts((vectors.data, 3, vectors.encoding), 0, 2))
            == expected
        )
    assert dumps_body(body, vectors, VectorJson()) == expected


def test_body_templates_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_json, "TEMPLATES", 3)
    templates = BodyTemplates()
    for n in range(10):
        body = orjson.dumps({"data": [{"index": 0}], "usage": {"prompt_tokens": n}}).decode()
        pieces = [b'{"data":[{"index":0,"embedding":', b'}],"usage":{"prompt_tokens":%d}}' % n]
        assert templates.pieces(body, 1) == pieces
        assert len(templates._kept) <= 3


def test_a_body_string_with_a_nul_character_keeps_it_escaped() -> None:
    """The template's marker is a raw NUL byte; a NUL in the body's text is written escaped."""
    vectors = _block(2, 1, VectorEncoding.FLOAT)
    body = orjson.dumps({"data": [{"index": 0}], "model": "a\u0000b"})
    assert dumps_body(body, vectors, VectorJson()) == dumps_with_vectors(body, vectors)


def test_base64_falls_back_to_the_standard_library(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(vector_json.importlib, "import_module", missing)
    assert vector_json._base64_encoder() is base64.b64encode
