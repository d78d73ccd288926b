"""The float32 vector codec: answers in, exact vectors out, for float and base64 answers."""

from __future__ import annotations

import base64
import random
import struct

import numpy as np
import orjson
import pytest

from jobs.vectors import VectorEncoding, Vectors, dumps_with_vectors, restore_vectors, take_vectors

DIMS = [1, 3, 8, 256, 512, 1024, 1536, 3072]


def float32_values(dim: int, seed: int) -> list[float]:
    """Floats that are exactly float32 values, as an embedding API sends them."""
    rng = random.Random(seed)
    raw = [rng.uniform(-1, 1) for _ in range(dim)]
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *raw)))


def answer(vectors: list[object]) -> dict[str, object]:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}}


def b64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize("dim", DIMS)
def test_float_answer_round_trips_exactly(dim: int) -> None:
    floats = [float32_values(dim, 1), float32_values(dim, 2)]
    sent = orjson.dumps(answer(list(floats)))
    body = orjson.loads(sent)
    vectors = take_vectors(body)
    assert vectors is not None
    assert (vectors.dim, vectors.count, vectors.encoding) == (dim, 2, VectorEncoding.FLOAT)
    assert len(vectors.data) == 4 * dim * 2
    assert all("embedding" not in item for item in body["data"])  # the body keeps no vector text
    assert orjson.loads(dumps_with_vectors(orjson.dumps(body), vectors)) == orjson.loads(sent)


@pytest.mark.parametrize("dim", DIMS)
def test_base64_answer_goes_to_bytes_and_back_byte_for_byte(dim: int) -> None:
    encoded = [b64(float32_values(dim, 3)), b64(float32_values(dim, 4))]
    body = answer(list(encoded))
    vectors = take_vectors(body)
    assert vectors is not None
    assert vectors.encoding == VectorEncoding.BASE64
    assert vectors.data == b"".join(base64.b64decode(e) for e in encoded)  # no float in between
    restored = restore_vectors(body, vectors)
    assert [d["embedding"] for d in restored["data"]] == encoded


def test_vectors_follow_the_index_order_not_the_list_order() -> None:
    body = {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}]}
    vectors = take_vectors(body)
    assert vectors is not None
    assert vectors.matrix().tolist() == [[1.0], [2.0]]
    assert [d["index"] for d in body["data"]] == [0, 1]


def test_part_slices_a_packed_answer_per_line() -> None:
    vectors = Vectors(np.arange(12, dtype="<f4").tobytes(), 3)
    assert vectors.part(1, 3).matrix().tolist() == [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
    assert vectors.part(1, 3).count == 2


def test_an_answer_without_embeddings_has_no_vectors() -> None:
    assert take_vectors({"object": "list", "data": []}) is None
    assert take_vectors({"error": "x"}) is None


@pytest.mark.parametrize(
    "vectors",
    [
        [[1.0, 2.0], [1.0]],  # sizes differ
        [[1.0, 2.0], "AACAPw=="],  # float and base64 mixed
        ["AACAPwAA"],  # base64 of a length that is not a float32 multiple
        ["not base64!"],
        [[]],
        [["a", "b"]],
    ],
)
def test_embeddings_that_are_not_one_float32_block_are_refused(vectors: list[object]) -> None:
    with pytest.raises(ValueError, match="embedding"):
        take_vectors(answer(vectors))


def test_a_data_item_without_embedding_among_others_is_refused() -> None:
    body = {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1}]}
    with pytest.raises(ValueError, match="no embedding"):
        take_vectors(body)
