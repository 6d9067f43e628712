"""gpt-oss's tokenizer, offline: tiktoken's `o200k_harmony`, and the original runtime's `tokenizer.bin`.

tiktoken downloads `o200k_base` at run time. We take the same file from the `bpe-openai` wheel
(`bpe_openai/data/o200k_base.tiktoken.gz`) or from `$CUPY_GETP_O200K_BASE`, check its sha256,
and place it where tiktoken's cache (`TIKTOKEN_CACHE_DIR`, file named by the sha1 of the download
address) and openai-harmony (`TIKTOKEN_ENCODINGS_BASE/o200k_base.tiktoken`) look for it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .errors import GetpError
from .fileio import atomic_output, cannot, read_bytes, utf8_text

O200K_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_SIZE = 201088

ENDOFTEXT = 199999  # <|endoftext|>
RETURN = 200002  # <|return|>
STOP_TOKENS = frozenset({ENDOFTEXT, RETURN})  # getp stops after sampling one of these

SPECIAL_SCORE = np.float32(-1e30)  # tokenizer.bin marks special tokens with this score


def cache_dirs() -> list[Path]:
    """Where the tokenizer cache may live, best first: `$CUPY_GETP_CACHE` alone when set (the user's
    choice is not second-guessed); else `$XDG_CACHE_HOME` or ~/.cache, then a private directory in
    the temporary directory, for machines with no home or a read-only one."""
    explicit = os.environ.get("CUPY_GETP_CACHE")
    if explicit:
        return [Path(explicit) / "cupy-getp"]
    bases = []
    with contextlib.suppress(RuntimeError):  # no $HOME and no password entry
        bases.append(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"))
    with contextlib.suppress(FileNotFoundError):  # "No usable temporary directory found"
        bases.append(Path(tempfile.gettempdir()) / f"cupy-getp-{os.getuid()}")
    return [base / "cupy-getp" for base in bases]


class CacheUnwritable(GetpError):
    """No directory of `cache_dirs()` can hold the tokenizer cache."""


def _o200k_source() -> Path:
    explicit = os.environ.get("CUPY_GETP_O200K_BASE")
    if explicit:
        if not Path(explicit).is_file():
            raise GetpError(f"CUPY_GETP_O200K_BASE={explicit} is not a file")
        return Path(explicit)
    spec = importlib.util.find_spec("bpe_openai")  # locate the package without importing its binary
    if spec and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"
        if path.is_file():
            return path
    raise GetpError("tokenizer data not found: install the bpe-openai package (pip install bpe-openai) "
                    "or set CUPY_GETP_O200K_BASE to an o200k_base.tiktoken[.gz] file")


def encodings_dir() -> Path:
    """A directory holding the verified `o200k_base.tiktoken` under both names tiktoken and
    openai-harmony look for; created on first use in the first usable cache directory."""
    candidates = [base / "tiktoken" for base in cache_dirs()]
    for directory in candidates:
        if _verified(directory):
            return directory
    data, problems = _o200k_data(), []
    for directory in candidates:
        try:
            _fill_cache(directory, data)
            return directory
        except (OSError, GetpError) as e:
            problems.append(str(e) if isinstance(e, GetpError) else str(cannot("write", directory, e)))
    first = problems[0] if problems else "no home directory and no usable temporary directory"
    raise CacheUnwritable(f"{first} (tokenizer cache; set CUPY_GETP_CACHE to a writable directory)")


def _verified(directory: Path) -> bool:
    """A cache is used only while its files hold o200k_base to the byte (sha256; ~10 ms each): with a
    damaged file, tiktoken would try to download it again and openai-harmony would fail every chat.
    A damaged cache is rebuilt from the source, offline."""
    try:
        return _trusted(directory) and all(_sha256(read_bytes(directory / name, regular=True)) == O200K_BASE_SHA256
                                           for name in _cache_names())
    except (OSError, GetpError):
        return False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cache_names() -> tuple[str, str]:
    return "o200k_base.tiktoken", hashlib.sha1(O200K_BASE_URL.encode()).hexdigest()


def _o200k_data() -> bytes:
    source = _o200k_source()
    data = read_bytes(source, regular=True)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt
            raise cannot("read", source, f"not a complete gzip file ({e})") from None
    digest = _sha256(data)
    if digest != O200K_BASE_SHA256:
        raise GetpError(f"{source}: sha256 {digest} is not o200k_base's {O200K_BASE_SHA256}")
    return data


def _fill_cache(directory: Path, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not _trusted(directory):
        raise GetpError(f"cannot write {directory}: owned by another user or writable by anyone")
    for name in _cache_names():
        with atomic_output(directory / name, binary=True) as f:
            f.write(data)


def _trusted(directory: Path) -> bool:
    """Ours and not world-writable: the temporary-directory fallback sits where anyone may have
    created it first, and tiktoken would read whatever it holds."""
    st = directory.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o002


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Tokenizer:
    """Text <-> token ids over a tiktoken `Encoding`."""

    def __init__(self, encoding):
        self.encoding = encoding
        self.vocab_size = encoding.n_vocab

    def encode(self, text: str, what: str = "the prompt") -> list[int]:
        """Ids of `text`, no BOS/EOS; special-token text in a prompt is encoded as plain text. Text
        that is not UTF-8 is refused, naming `what`."""
        return self.encoding.encode(utf8_text(text, what), disallowed_special=())

    def decode(self, ids) -> str:
        return self.encoding.decode([int(i) for i in ids])

    def token_bytes(self, token: int) -> bytes:
        return self.encoding.decode_single_token_bytes(int(token))


def harmony_tokenizer() -> Tokenizer:
    """Exact `o200k_harmony` (vocabulary 201088), offline. Where no cache directory can be written (and
    the user named none), it is built in memory from the verified source, each time."""
    import tiktoken

    try:
        directory = encodings_dir()
    except CacheUnwritable:
        if os.environ.get("CUPY_GETP_CACHE"):  # the user's choice: say it does not work
            raise
        return Tokenizer(_in_memory_encoding(_o200k_data()))
    with _env(TIKTOKEN_CACHE_DIR=str(directory)):
        encoding = tiktoken.get_encoding("o200k_harmony")
    return Tokenizer(encoding)


def _in_memory_encoding(data: bytes):
    """tiktoken's own o200k_harmony constructor with its file reader handed `data` (verified o200k_base)
    instead of a cached download: the same encoding, no file written or read."""
    import tiktoken
    import tiktoken.load
    from tiktoken_ext import openai_public

    reader = tiktoken.load.read_file_cached
    tiktoken.load.read_file_cached = lambda blobpath, expected_hash=None: data
    try:
        spec = openai_public.o200k_harmony()
    finally:
        tiktoken.load.read_file_cached = reader
    return tiktoken.Encoding(**spec)


def load_tokenizer(path: str | os.PathLike | None = None) -> Tokenizer:
    """`o200k_harmony`, or the original runtime's `tokenizer.bin` at `path`."""
    return harmony_tokenizer() if path is None else read_tokenizer_bin(path)


# -- tokenizer.bin -------------------------------------------------------------------------------------
def write_tokenizer_bin(path: str | os.PathLike, tokenizer: Tokenizer) -> int:
    """int32 max_token_length, then per token: float32 score, int32 byte length, bytes. Regular tokens
    get score -rank (BPE merges the highest score first), special tokens their text and -1e30."""
    enc = tokenizer.encoding
    specials = {i: s.encode() for s, i in enc._special_tokens.items()}
    pieces = [specials[i] if i in specials else enc.decode_single_token_bytes(i) for i in range(enc.n_vocab)]
    with atomic_output(path, binary=True) as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for i, piece in enumerate(pieces):
            score = SPECIAL_SCORE if i in specials else np.float32(-i)
            f.write(struct.pack("<fi", score, len(piece)) + piece)
    return len(pieces)


def read_tokenizer_bin(path: str | os.PathLike) -> Tokenizer:
    """A tiktoken Encoding from a `tokenizer.bin`: token i is rank i, score -1e30 marks specials;
    the pre-tokenizer pattern is o200k's (the file does not store one)."""
    import tiktoken

    data = read_bytes(path)
    ranks, specials = _parse_tokenizer_bin(data, str(path))
    pattern = harmony_tokenizer().encoding._pat_str
    encoding = tiktoken.Encoding(name=Path(path).name, pat_str=pattern, mergeable_ranks=ranks,
                                 special_tokens=specials)
    return Tokenizer(encoding)


def _parse_tokenizer_bin(data: bytes, source: str) -> tuple[dict[bytes, int], dict[str, int]]:
    if len(data) < 4:
        raise GetpError(f"tokenizer file {source} is truncated: {len(data)} bytes")
    (max_len,) = struct.unpack_from("<i", data, 0)
    offset, ranks, specials = 4, {}, {}
    while offset < len(data):
        if offset + 8 > len(data):
            raise GetpError(f"tokenizer file {source} is truncated at token {len(ranks) + len(specials)}")
        score, n = struct.unpack_from("<fi", data, offset)
        if not 0 < n <= max_len or offset + 8 + n > len(data):
            raise GetpError(f"tokenizer file {source}: token {len(ranks) + len(specials)} has a bad length {n}")
        piece = data[offset + 8: offset + 8 + n]
        token_id = len(ranks) + len(specials)
        special = score == SPECIAL_SCORE
        table, key = (specials, piece.decode("utf-8", errors="replace")) if special else (ranks, piece)
        if key in table:
            raise GetpError(f"tokenizer file {source}: token {token_id} repeats token {table[key]} ({piece!r:.40})")
        table[key] = token_id
        offset += 8 + n
    _check_single_bytes(ranks, source)
    return ranks, specials


def _check_single_bytes(ranks: dict[bytes, int], source: str) -> None:
    """Byte-level BPE starts from the 256 single bytes: tiktoken's Rust core panics on text holding a
    byte that is not a regular token (one marked special, say)."""
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise GetpError(f"tokenizer file {source}: byte 0x{missing[0]:02x} is not a regular token "
                        f"({len(missing)} of the 256 single bytes are not), so some text could not be encoded")
