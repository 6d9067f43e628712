"""Chat in the harmony format gpt-oss was trained on, rendered by `openai-harmony` (offline).

Each turn re-renders the whole conversation and decodes it from position 0: harmony drops earlier
turns' analysis messages when rendering, so the previous turn's cache is not a prefix of the next.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

import numpy as np

from .engine.base import Engine
from .errors import GetpError
from .fileio import utf8_text
from .generation import TextStream, check_prompt, decode
from .tokenizer import Tokenizer, encodings_dir


@functools.cache
def harmony_encoding():
    try:
        import openai_harmony as oh
    except ImportError:
        raise GetpError("chat needs the openai-harmony package: pip install openai-harmony") from None
    os.environ.setdefault("TIKTOKEN_ENCODINGS_BASE", str(encodings_dir()))
    return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


class ChatSession:
    """A conversation: a system message, the optional developer instructions (`-y`), then turns."""

    def __init__(self, engine: Engine, sample: Callable[[np.ndarray], int], tokenizer: Tokenizer, steps: int,
                 instructions: str | None = None):
        import openai_harmony as oh

        self.oh, self.encoding = oh, harmony_encoding()
        self.engine, self.sample, self.tokenizer, self.steps = engine, sample, tokenizer, steps
        self.messages = [oh.Message.from_role_and_content(oh.Role.SYSTEM, oh.SystemContent.new())]
        if instructions:
            developer = oh.DeveloperContent.new().with_instructions(utf8_text(instructions, "the instructions"))
            self.messages.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, developer))

    def prompt_tokens(self) -> list[int]:
        conversation = self.oh.Conversation.from_messages(self.messages)
        return self.encoding.render_conversation_for_completion(conversation, self.oh.Role.ASSISTANT)

    def reply(self, user_text: str) -> Iterator[tuple[str | None, str]]:
        """Add a user turn (checked now, before the answer starts) and stream the assistant's answer as
        (channel, text) pieces. Output that is not valid harmony (a random model's) is streamed raw,
        with channel None."""
        oh = self.oh
        self.messages.append(oh.Message.from_role_and_content(oh.Role.USER, utf8_text(user_text, "the message")))
        return self._answer()

    def _answer(self) -> Iterator[tuple[str | None, str]]:
        oh = self.oh
        stop = frozenset(self.encoding.stop_tokens_for_assistant_actions())
        parser, raw = oh.StreamableParser(self.encoding, oh.Role.ASSISTANT), []
        text, shown = TextStream(self.tokenizer), False
        prompt = self.prompt_tokens()
        check_prompt(prompt, self.steps, "the conversation", self.engine.config.seq_len)
        for token in decode(self.engine, self.sample, prompt, self.steps, stop):
            raw.append(token)
            if parser is not None:
                try:
                    parser.process(token)
                except oh.HarmonyError:
                    parser = None  # from here on, show the tokens as text
            if parser is None:
                if token not in stop:
                    shown = True
                    yield None, text.push(token)
            elif parser.last_content_delta:
                shown = True
                yield parser.current_channel, parser.last_content_delta
        if not shown:  # all of it went into a never-ending message header: show it as text
            yield None, self.tokenizer.decode([t for t in raw if t not in stop])
        self.messages.extend(self._parsed(raw, stop))

    def _parsed(self, tokens: list[int], stop: frozenset[int]) -> list:
        oh = self.oh
        try:
            return self.encoding.parse_messages_from_completion_tokens(tokens, oh.Role.ASSISTANT)
        except oh.HarmonyError:
            text = self.encoding.decode([t for t in tokens if t not in stop])
            return [oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel("final")]
