"""Exact behaviour of container detection at its edges: a bare pickle from its two-byte start and
each protocol 2..5 (not 1 or 6), a safetensors header's '{' at byte 8 in a head of exactly 9 bytes."""

from __future__ import annotations

import pytest

from tokensmith.formats.detect import PICKLE, SAFETENSORS, detect_container


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_pickle_of_protocol_2_to_5_is_a_pickle_from_two_bytes(protocol):
    assert detect_container(bytes([0x80, protocol])) == PICKLE
    assert detect_container(bytes([0x80, protocol]) + b"x" * 14) == PICKLE


@pytest.mark.parametrize("head", [bytes([0x80, 1]), bytes([0x80, 6]), b"\x80", bytes([0x81, 2])])
def test_other_protocols_and_one_byte_are_not_a_pickle(head):
    assert detect_container(head) is None


def test_a_safetensors_header_needs_only_nine_bytes():
    assert detect_container(b"\x10\x00\x00\x00\x00\x00\x00\x00{") == SAFETENSORS
    assert detect_container(b"\x10\x00\x00\x00\x00\x00\x00\x00") is None
