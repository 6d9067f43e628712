"""The server's text handling, without a server: stop strings over streamed pieces, harmony channels
of a chat answer (analysis as reasoning_content), and the context check of a request."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install '.[serve]'")

from cupy_getp.chat import harmony_encoding  # noqa: E402
from cupy_getp.serve.engine_loop import prompt_fits  # noqa: E402
from cupy_getp.serve.replies import Answer, ChatText, CompletionText, StopStrings  # noqa: E402
from cupy_getp.tokenizer import ENDOFTEXT  # noqa: E402


def test_stop_string_split_over_pieces_is_found_and_not_shown():
    stops = StopStrings(["END", "xyz"])
    shown = []
    for piece in ["ab", "cE", "N", "Dtail"]:
        text, stopped = stops.push(piece)
        shown.append(text)
        if stopped:
            break
    assert "".join(shown) == "abc" and stopped


def test_text_held_back_for_a_stop_string_is_shown_at_the_end():
    stops = StopStrings(["END"])
    assert stops.push("abcE") == ("ab", False)
    assert stops.push("N") == ("c", False)  # "EN" may still become "END"
    assert stops.flush() == "EN"


def test_completion_text_hides_stop_tokens_and_applies_stop_strings(tokenizer):
    tokens = tokenizer.encode("one two three four")
    answer = Answer(CompletionText(tokenizer), [" three"])
    pieces = [p for t in tokens for p in answer.push(t)]
    assert answer.stopped and "".join(text for _, text in pieces) == "one two"
    plain = Answer(CompletionText(tokenizer), [])
    assert [p for t in [*tokens, ENDOFTEXT] for p in plain.push(t)] + plain.finish() == \
        [("text", tokenizer.decode([t])) for t in tokens]


def test_chat_analysis_channel_is_reasoning_content(tokenizer):
    completion = ("<|channel|>analysis<|message|>Think it over.<|end|><|start|>assistant<|channel|>final"
                  "<|message|>The answer.<|return|>")
    tokens = harmony_encoding().encode(completion, allowed_special="all")
    answer = Answer(ChatText(tokenizer), [])
    fields: dict[str, str] = {}
    for name, text in [p for t in tokens for p in answer.push(t)] + answer.finish():
        fields[name] = fields.get(name, "") + text
    assert fields == {"reasoning_content": "Think it over.", "content": "The answer."}


def test_chat_output_that_is_not_harmony_is_content(tokenizer):
    tokens = tokenizer.encode("just text")
    answer = Answer(ChatText(tokenizer), [])
    pieces = [p for t in tokens for p in answer.push(t)] + answer.finish()
    assert {name for name, _ in pieces} == {"content"} and "".join(t for _, t in pieces) == "just text"


@pytest.mark.parametrize("prompt_len, max_tokens, fits", [
    (8, None, True), (8, 1, True), (8, 9, True), (8, 10, False), (16, None, True), (17, None, False),
])
def test_prompt_fits_the_context_as_getp_counts_it(prompt_len, max_tokens, fits):
    """16 positions: a prompt of 8 leaves 9 tokens (the last one sampled is never fed)."""
    assert (prompt_fits([1] * prompt_len, max_tokens, 16) is None) == fits


@pytest.mark.parametrize("host, api_key, warned", [
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False), ("0.0.0.0", None, True),
    ("192.168.1.7", None, True), ("0.0.0.0", "key", False),
])
def test_binding_beyond_loopback_without_a_key_is_warned(host, api_key, warned):
    from cupy_getp.serve.server import exposure_warning

    assert (exposure_warning(host, api_key) is not None) == warned
