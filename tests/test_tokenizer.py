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


# -- no directory at all can be written ----------------------------------------------------------------------
def no_writable_directory(tmp_path) -> dict[str, str]:
    """An environment where neither the home cache nor the temporary directory's fallback can be created:
    no home, and TMPDIR's `cupy-getp-UID` taken by a file (the tests run as root: permissions would not stop
    it)."""
    import os

    (tmp_path / f"cupy-getp-{os.getuid()}").write_text("not a directory")
    return {"HOME": "/proc/no-such-home", "XDG_CACHE_HOME": "", "CUPY_GETP_CACHE": "", "TMPDIR": str(tmp_path)}


def test_with_no_writable_directory_the_tokenizer_loads_from_memory(tmp_path):
    from conftest import cli

    ids = tmp_path / "ids.txt"
    ids.write_text("13225 2375\n")
    env = no_writable_directory(tmp_path)
    before = sorted(tmp_path.iterdir())
    result = cli("decode", str(ids), env=env)
    assert result.returncode == 0 and result.stdout == "Hello world\n", result.stderr
    assert sorted(tmp_path.iterdir()) == before  # nothing cached anywhere we can see


def test_with_no_writable_directory_chat_ends_in_one_line(tmp_path):
    """openai-harmony reads its encoding from a directory: chat says which one could not be written."""
    from conftest import cli

    result = cli("chat", "7m", "--engine", "numpy", "-i", "hi", "-n", "64", env=no_writable_directory(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: cannot write /proc/no-such-home/.cache/cupy-getp/tiktoken: No such file or directory (tokenizer "
        "cache; set CUPY_GETP_CACHE to a writable directory)")


def test_no_usable_temporary_directory_at_all_still_loads(monkeypatch, tokenizer):
    """tempfile finds no usable temporary directory (FileNotFoundError) and home is unusable: the in-memory
    encoding, the same as the cached one."""
    import tempfile

    def no_temporary_directory():
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.setattr(tempfile, "gettempdir", no_temporary_directory)
    monkeypatch.setenv("HOME", "/proc/no-such-home")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.delenv("CUPY_GETP_CACHE", raising=False)
    loaded = harmony_tokenizer()
    text = (ROOT / "data" / "input.txt").read_text()
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.vocab_size == 201088
    assert loaded.encoding.encode_single_token("<|return|>") == RETURN
