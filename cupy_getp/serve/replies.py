"""A job's tokens to the pieces of its answer, (field, text), as they come: plain text for completions,
the harmony channels for chat (the analysis channel is `reasoning_content`, as vLLM names it), each cut
at the first stop string of the request."""

from __future__ import annotations

from ..chat import HarmonyReply
from ..generation import TextStream
from ..tokenizer import STOP_TOKENS, Tokenizer

Pieces = list[tuple[str, str]]  # (field, text): "text" (completions), "content" or "reasoning_content" (chat)


class StopStrings:
    """Text as it streams, cut before the first stop string: `push` returns what is safe to show now,
    holding back a tail short enough to be the start of a stop string."""

    def __init__(self, stops: list[str]):
        self.stops, self.held = stops, ""
        self.keep = max(map(len, stops), default=1) - 1

    def push(self, text: str) -> tuple[str, bool]:
        """(text to show, whether a stop string ended the answer)."""
        if not self.stops:
            return text, False
        text = self.held + text
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return text[:min(found)], True
        cut = max(0, len(text) - self.keep)
        self.held = text[cut:]
        return text[:cut], False

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text


class CompletionText:
    """Completions: the tokens' text; stop tokens end the answer and are not shown."""

    answer = "text"
    stop = STOP_TOKENS  # as getp

    def __init__(self, tokenizer: Tokenizer):
        self.stream = TextStream(tokenizer)

    def push(self, token: int) -> Pieces:
        return [] if token in self.stop else [("text", self.stream.push(token))]

    def finish(self) -> Pieces:
        return [("text", self.stream.flush())]


class ChatText:
    """Chat: harmony's channels (`chat.HarmonyReply`); output that is not harmony is shown as content."""

    answer = "content"

    def __init__(self, tokenizer: Tokenizer):
        self.reply = HarmonyReply(tokenizer)
        self.stop = self.reply.stop

    def push(self, token: int) -> Pieces:
        return [(field_of(channel), text) for channel, text in self.reply.push(token)]

    def finish(self) -> Pieces:
        return [(field_of(channel), text) for channel, text in self.reply.finish()]


def field_of(channel: str | None) -> str:
    return "reasoning_content" if channel == "analysis" else "content"


class Answer:
    """A renderer's pieces with the request's stop strings applied to the answer field."""

    def __init__(self, renderer, stops: list[str]):
        self.renderer, self.stops = renderer, StopStrings(stops)
        self.stopped = False  # by a stop string

    def push(self, token: int) -> Pieces:
        return self._cut(self.renderer.push(token))

    def finish(self) -> Pieces:
        pieces = self._cut(self.renderer.finish())
        if not self.stopped:
            pieces.append((self.renderer.answer, self.stops.flush()))
        return [(f, t) for f, t in pieces if t]

    def _cut(self, pieces: Pieces) -> Pieces:
        out = []
        for field, text in pieces:
            if self.stopped:
                break
            if field == self.renderer.answer:
                text, self.stopped = self.stops.push(text)
            out.append((field, text))
        return [(f, t) for f, t in out if t]
