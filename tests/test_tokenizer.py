"""o200k_harmony offline, and the original runtime's tokenizer.bin."""

from __future__ import annotations

import gzip

import pytest

from cupy_getp.errors import GetpError
from cupy_getp.getp import read_requests
from cupy_getp.tokenizer import (ENDOFTEXT, RETURN, harmony_tokenizer, read_tokenizer_bin,
                                 write_tokenizer_bin)

from conftest import ROOT


def test_hello_world(tokenizer):
    assert tokenizer.vocab_size == 201088
    assert tokenizer.encode("Hello world") == [13225, 2375]
    assert tokenizer.decode([13225, 2375]) == "Hello world"


def test_special_tokens(tokenizer):
    enc = tokenizer.encoding
    expected = {"<|startoftext|>": 199998, "<|endoftext|>": ENDOFTEXT, "<|return|>": RETURN,
                "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007,
                "<|message|>": 200008, "<|call|>": 200012}
    for text, token in expected.items():
        assert enc.encode_single_token(text) == token
    # special-token text inside a prompt is plain text, not a control token
    assert ENDOFTEXT not in tokenizer.encode("a <|endoftext|> b")


def test_round_trip_on_the_standard_input(tokenizer):
    for prompt in read_requests(ROOT / "data" / "input.txt"):
        tokens = tokenizer.encode(prompt)
        assert tokens and tokenizer.decode(tokens) == prompt


def test_tokenizer_bin_round_trip(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.bin"
    assert write_tokenizer_bin(path, tokenizer) == 201088
    from_bin = read_tokenizer_bin(path)
    assert from_bin.vocab_size == 201088
    for prompt in read_requests(ROOT / "data" / "input.txt"):
        assert from_bin.encode(prompt) == tokenizer.encode(prompt)
    assert from_bin.decode([200006, 13225]) == "<|start|>Hello"


def test_tokenizer_bin_layout(tmp_path, tokenizer):
    import struct

    path = tmp_path / "tokenizer.bin"
    write_tokenizer_bin(path, tokenizer)
    data = path.read_bytes()
    (max_len,) = struct.unpack_from("<i", data, 0)
    score, n = struct.unpack_from("<fi", data, 4)
    assert n == 1 and data[12:13] == tokenizer.token_bytes(0) and score == 0.0
    assert max_len >= 128  # o200k has long whitespace/punctuation runs


def test_truncated_tokenizer_bin(tmp_path, tokenizer):
    path = tmp_path / "tokenizer.bin"
    write_tokenizer_bin(path, tokenizer)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(GetpError, match="tokenizer file .* (truncated|bad length)"):
        read_tokenizer_bin(path)


def test_hash_is_checked(tmp_path, monkeypatch):
    bogus = tmp_path / "o200k_base.tiktoken.gz"
    bogus.write_bytes(gzip.compress(b"aGVsbG8= 0\n"))
    monkeypatch.setenv("CUPY_GETP_O200K_BASE", str(bogus))
    monkeypatch.setenv("CUPY_GETP_CACHE", str(tmp_path / "cache"))
    with pytest.raises(GetpError, match="sha256 .* is not o200k_base's"):
        harmony_tokenizer()
    assert not (tmp_path / "cache" / "cupy-getp" / "tiktoken" / "o200k_base.tiktoken").exists()
