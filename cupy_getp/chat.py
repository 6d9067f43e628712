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
        (channel, text) pieces (`HarmonyReply`)."""
        oh = self.oh
        self.messages.append(oh.Message.from_role_and_content(oh.Role.USER, utf8_text(user_text, "the message")))
        return self._answer()

    def _answer(self) -> Iterator[tuple[str | None, str]]:
        reply = HarmonyReply(self.tokenizer)
        prompt = self.prompt_tokens()
        check_prompt(prompt, self.steps, "the conversation", self.engine.config.seq_len)
        for token in decode(self.engine, self.sample, prompt, self.steps, reply.stop):
            yield from reply.push(token)
        yield from reply.finish()
        self.messages.extend(self._parsed(reply.raw, reply.stop))

    def _parsed(self, tokens: list[int], stop: frozenset[int]) -> list:
        oh = self.oh
        try:
            return self.encoding.parse_messages_from_completion_tokens(tokens, oh.Role.ASSISTANT)
        except oh.HarmonyError:
            text = self.encoding.decode([t for t in tokens if t not in stop])
            return [oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel("final")]


class HarmonyReply:
    """An assistant's tokens as they come, to (channel, text) pieces: the harmony parser's deltas, or,
    from the first token that is not valid harmony (a random model's), the tokens as raw text with
    channel None. `stop` are the tokens that end an assistant's turn (not shown)."""

    def __init__(self, tokenizer: Tokenizer):
        import openai_harmony as oh

        self.oh, self.tokenizer, encoding = oh, tokenizer, harmony_encoding()
        self.stop = frozenset(encoding.stop_tokens_for_assistant_actions())
        self.parser = oh.StreamableParser(encoding, oh.Role.ASSISTANT)
        self.text, self.raw, self.shown = TextStream(tokenizer), [], False

    def push(self, token: int) -> list[tuple[str | None, str]]:
        self.raw.append(token)
        if self.parser is not None:
            try:
                self.parser.process(token)
            except self.oh.HarmonyError:
                self.parser = None  # from here on, show the tokens as text
        if self.parser is None:
            if token in self.stop:
                return []
            self.shown = True
            return [(None, self.text.push(token))]
        if self.parser.last_content_delta:
            self.shown = True
            return [(self.parser.current_channel, self.parser.last_content_delta)]
        return []

    def finish(self) -> list[tuple[str | None, str]]:
        """What is left to show at the end: all of it, as text, when every token went into a message
        header that never ended."""
        if self.shown:
            return []
        return [(None, self.tokenizer.decode([t for t in self.raw if t not in self.stop]))]


def harmony_prompt(messages: list, reasoning_effort: str | None = None) -> list[int]:
    """The tokens of a conversation of (role, text) pairs, roles "developer", "user" or "assistant"
    (an assistant's text is its final answer), ready for the assistant's next reply: the system
    message first (with the reasoning effort, "low", "medium" or "high", when given)."""
    import openai_harmony as oh

    system = oh.SystemContent.new()
    if reasoning_effort is not None:
        system = system.with_reasoning_effort(oh.ReasoningEffort[reasoning_effort.upper()])
    rendered = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system)]
    for role, text in messages:
        if role == "developer":
            rendered.append(oh.Message.from_role_and_content(
                oh.Role.DEVELOPER, oh.DeveloperContent.new().with_instructions(text)))
        elif role == "assistant":
            rendered.append(oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel("final"))
        else:
            rendered.append(oh.Message.from_role_and_content(oh.Role(role), text))
    conversation = oh.Conversation.from_messages(rendered)
    return harmony_encoding().render_conversation_for_completion(conversation, oh.Role.ASSISTANT)
