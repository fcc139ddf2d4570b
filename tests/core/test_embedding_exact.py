"""Exact behaviour of the in-memory Embedding: every refusal of __post_init__ word for word, a 1-D
tensor taken as one row, the shape checks at their edges, and the canonical encoder order with
unknown keys last."""

import pytest
import torch

from tests.core.refusals import refused
from tokensmith.embedding import ENCODER_WIDTHS, Embedding, canonical_order
from tokensmith.errors import FamilyMismatchError, TokenSmithError


def test_no_vectors_at_all_is_refused():
    with refused("an embedding needs at least one encoder's vectors", TokenSmithError):
        Embedding(vectors={})


def test_vectors_that_are_not_a_tensor_are_refused_by_key():
    with refused("vectors for 'clip_l' are not a tensor", TokenSmithError):
        Embedding(vectors={"clip_l": [[0.0, 1.0]]})


def test_a_one_dimensional_tensor_is_one_row():
    emb = Embedding(vectors={"clip_l": torch.arange(4.0)})
    assert emb.shapes() == {"clip_l": [1, 4]}
    assert torch.equal(emb.vectors["clip_l"][0], torch.arange(4.0))


@pytest.mark.parametrize("shape", [(1, 2, 3), (2, 1, 1, 4), ()])
def test_a_tensor_of_another_rank_is_refused_with_its_shape(shape):
    t = torch.zeros(shape)
    with refused(f"vectors for 'clip_g' have shape {list(shape)}; expected [n, width]", TokenSmithError):
        Embedding(vectors={"clip_g": t})


def test_zero_rows_are_refused_and_one_row_is_the_edge():
    with refused("vectors for 'clip_l' have shape [0, 768]; expected [n, width]", TokenSmithError):
        Embedding(vectors={"clip_l": torch.zeros(0, 768)})
    assert Embedding(vectors={"clip_l": torch.zeros(1, 768)}).num_vectors == 1


def test_the_row_check_is_on_rows_not_width():
    """A [2, 0] tensor has rows (it is not refused here; a width of 0 fits no encoder, later)."""
    assert Embedding(vectors={"x": torch.zeros(2, 0)}).shapes() == {"x": [2, 0]}


def test_different_row_counts_are_refused_with_every_shape():
    with refused("every encoder needs the same number of vectors, got {'clip_l': [2, 768], 'clip_g': [3, 1280]}",
                 FamilyMismatchError):
        Embedding(vectors={"clip_l": torch.zeros(2, 768), "clip_g": torch.zeros(3, 1280)})


def test_canonical_order_follows_the_known_encoders_with_unknown_keys_last_as_given():
    known = list(ENCODER_WIDTHS)
    keys = ["zz", known[3], "aa", known[0], known[2]]
    assert canonical_order(keys) == [known[0], known[2], known[3], "zz", "aa"]
    assert canonical_order(["b", "a"]) == ["b", "a"]
