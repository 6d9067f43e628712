"""Request bodies of the OpenAI API, as far as this server implements them. Types are strict (a
string is not a number); fields we do not implement are ignored, except those whose value would change
the answer (`n`, `echo`, `logprobs`, tools), which are refused rather than silently dropped."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from ..errors import GetpError
from ..fileio import utf8_text

MAX_STOP = 4


def text_of(text: str, what: str) -> str:
    """Text for the tokenizer or openai-harmony (a JSON string may hold a lone surrogate: refused)."""
    try:
        return utf8_text(text, what)
    except GetpError as e:
        raise ValueError(str(e)) from None
SEED_MAX = 2**64 - 1



class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: StrictBool = False


class SamplingFields(BaseModel):
    """What completions and chat share."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: StrictStr
    max_tokens: Optional[StrictInt] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: Optional[float] = Field(None, ge=0, le=1, allow_inf_nan=False)
    seed: Optional[StrictInt] = Field(None, ge=0, le=SEED_MAX)
    stop: Union[StrictStr, list[StrictStr], None] = None
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    n: StrictInt = Field(1, ge=1, le=1, description="one choice per request")
    return_token_ids: StrictBool = False  # extension (as vLLM's): the generated token ids of each choice

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ValueError(f"stop takes up to {MAX_STOP} non-empty strings")
        return stops

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


TokenIds = list[StrictInt]


class CompletionRequest(SamplingFields):
    prompt: Union[StrictStr, TokenIds, list[StrictStr], list[TokenIds]]
    echo: Literal[False] = False
    logprobs: Literal[None] = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt):
        """A string or token ids; a list of one of those is the same (a batch of several is refused)."""
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise ValueError("one prompt per request (send a request for each)")
            prompt = prompt[0]
        if not prompt:
            raise ValueError("the prompt is empty")
        return text_of(prompt, "the prompt") if isinstance(prompt, str) else prompt


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[StrictStr, list[TextPart]]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    @field_validator("content")
    @classmethod
    def _utf8(cls, content):
        if isinstance(content, str):
            return text_of(content, "the content")
        for part in content:
            text_of(part.text, "the content")
        return content


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=1)
    reasoning_effort: Optional[Literal["low", "medium", "high"]] = None
    tools: Literal[None] = None
    logprobs: Literal[None, False] = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def harmony_messages(self) -> list[tuple[str, str]]:
        """(role, text) for `chat.harmony_prompt`: the OpenAI "system" message is the developer's
        instructions in harmony (its system message holds the model's settings), as vLLM renders it."""
        return [("developer" if m.role == "system" else m.role, m.text) for m in self.messages]
