"""`cupy-getp serve` against the real openai client: a live server on a free 127.0.0.1 port, the 7m
preset on the numpy engine (requests in turn) or, marked gpu, the batched engine. Greedy answers must
be getp's lines; bad requests get their status and leave the server serving; a client that leaves
frees its slot; a full queue answers 429; SIGTERM ends the streams cleanly."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra: pip install '.[serve]'")
openai = pytest.importorskip("openai", reason="the server tests need the openai client (the test extra)")
httpx = pytest.importorskip("httpx")

from cupy_getp.chat import harmony_prompt  # noqa: E402
from cupy_getp.getp import GetpHooks, GetpOptions, getp, read_token_lines  # noqa: E402
from cupy_getp.sampler import Sampler  # noqa: E402
from cupy_getp.tokenizer import STOP_TOKENS  # noqa: E402

from conftest import ROOT  # noqa: E402
from serve_helpers import LiveServer, metric  # noqa: E402

CONTEXT = 96  # -n of the shared server: room for a chat prompt (~60 tokens) and a short answer
KEY = "test-key"
ENGINES = ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


def client(server, key: str = "unused", **kw):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60, **kw)


@pytest.fixture(scope="module", params=ENGINES)
def server(request):
    with LiveServer("7m", "--engine", request.param, "-n", str(CONTEXT), "-t", "0", "--max-body", "65536") as s:
        s.engine = request.param
        yield s


def wait_for(condition, timeout: float = 10.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return condition()


def metrics(server) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=10).text


# -- completions and chat -------------------------------------------------------------------------------
def test_completion_whole_and_streamed_agree(server, tokenizer):
    api = client(server)
    whole = api.completions.create(model="7m", prompt="Hello world", max_tokens=6,
                                   extra_body={"return_token_ids": True})
    choice = whole.choices[0]
    assert choice.finish_reason == "length" and len(choice.token_ids) == 6
    assert choice.text == tokenizer.decode([t for t in choice.token_ids if t not in STOP_TOKENS])
    assert whole.usage.prompt_tokens == len(tokenizer.encode("Hello world")) and whole.usage.completion_tokens == 6

    chunks = list(api.completions.create(model="7m", prompt=tokenizer.encode("Hello world"), max_tokens=6,
                                         stream=True, stream_options={"include_usage": True},
                                         extra_body={"return_token_ids": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert [t for c in chunks if c.choices for t in c.choices[0].token_ids] == choice.token_ids
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 6 and not chunks[-1].choices


def test_chat_whole_and_streamed_agree(server):
    api = client(server)
    messages = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hello"}]
    whole = api.chat.completions.create(model="7m", messages=messages, max_tokens=5, reasoning_effort="low")
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 5
    assert whole.usage.prompt_tokens == len(harmony_prompt([("developer", "Be brief"), ("user", "Hello")], "low"))
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].message.content

    stream = list(api.chat.completions.create(model="7m", messages=messages, max_tokens=5, reasoning_effort="low",
                                              stream=True))
    assert stream[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in stream) == whole.choices[0].message.content
    assert stream[-1].choices[0].finish_reason == "length"


def test_stop_string_ends_the_answer(server):
    api = client(server)
    full = api.completions.create(model="7m", prompt="Hello", max_tokens=8).choices[0].text
    cut = full[len(full) // 2:][:2]  # a stop string from the middle of the greedy answer
    stopped = api.completions.create(model="7m", prompt="Hello", max_tokens=8, stop=[cut]).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == full[:full.index(cut)]


def test_a_seed_gives_the_same_sample_again(server):
    api = client(server)

    def sample(seed):
        return api.completions.create(model="7m", prompt="Hello", max_tokens=8, temperature=1.0, top_p=1.0,
                                      seed=seed, extra_body={"return_token_ids": True}).choices[0].token_ids

    first = sample(7)
    assert sample(7) == first and sample(8) != first


def test_sixteen_concurrent_streams_equal_getp(server, tmp_path, tokenizer):
    prompts = (ROOT / "data" / "input.txt").read_text().splitlines()[1:17]
    (tmp_path / "in.txt").write_text(f"{len(prompts)}\n" + "".join(p + "\n" for p in prompts))
    getp("7m", tmp_path / "in.txt", tmp_path / "out.txt", tokenizer=tokenizer, sampler=Sampler(0.0, 0.9, 1),
         options=GetpOptions(engine=server.engine, steps=CONTEXT), hooks=GetpHooks(echo=lambda line: None))
    want = read_token_lines(tmp_path / "out.txt", tokenizer.vocab_size)

    got: dict[int, tuple[list[int], str]] = {}

    def ask(i: int) -> None:
        stream = client(server).completions.create(model="7m", prompt=prompts[i], stream=True,
                                                   extra_body={"return_token_ids": True})
        chunks = [c for c in stream if c.choices]
        got[i] = ([t for c in chunks for t in c.choices[0].token_ids], "".join(c.choices[0].text for c in chunks))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(got) == list(range(len(prompts)))
    for i, line in enumerate(want):
        assert got[i][0] == line, f"request {i} ({prompts[i]!r})"
        assert got[i][1] == tokenizer.decode([t for t in line if t not in STOP_TOKENS])


# -- bad requests -----------------------------------------------------------------------------------------
LONG_PROMPT = [13225] * (CONTEXT + 1)
BAD_REQUESTS = {
    "malformed JSON": (b'{"model": "7m", "prompt": ', 400, None),
    "not an object": (json.dumps([1, 2]).encode(), 400, None),
    "wrong type": ({"model": "7m", "prompt": "Hi", "max_tokens": "5"}, 400, "max_tokens"),
    "prompt of the wrong type": ({"model": "7m", "prompt": {"text": "Hi"}}, 400, "prompt"),
    "unknown model": ({"model": "gpt-5", "prompt": "Hi"}, 404, "model"),
    "prompt longer than the context": ({"model": "7m", "prompt": LONG_PROMPT}, 400, "prompt"),
    "max_tokens past the context": ({"model": "7m", "prompt": "Hi", "max_tokens": CONTEXT + 1}, 400, "max_tokens"),
    "token id outside the vocabulary": ({"model": "7m", "prompt": [1, 10**9]}, 400, "prompt"),
    "temperature out of range": ({"model": "7m", "prompt": "Hi", "temperature": 2.5}, 400, "temperature"),
    "top_p out of range": ({"model": "7m", "prompt": "Hi", "top_p": 1.5}, 400, "top_p"),
    "negative seed": ({"model": "7m", "prompt": "Hi", "seed": -1}, 400, "seed"),
    "body over the size limit": ({"model": "7m", "prompt": "x" * 70000}, 413, None),
    "several choices": ({"model": "7m", "prompt": "Hi", "n": 2}, 400, "n"),
    "a lone surrogate": (b'{"model": "7m", "prompt": "a\\ud800b"}', 400, "prompt"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_its_status_and_the_server_keeps_serving(server, case):
    body, status, param = BAD_REQUESTS[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = httpx.post(f"{server.url}/v1/completions", content=content,
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["message"] and error["type"] and error["param"] == param
    assert client(server).completions.create(model="7m", prompt="Hi", max_tokens=2).choices[0].text is not None


def test_bad_chat_requests(server):
    api = client(server)
    with pytest.raises(openai.BadRequestError, match="role"):
        api.chat.completions.create(model="7m", messages=[{"role": "tool", "content": "x"}], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        api.chat.completions.create(model="7m", messages=[{"role": "user", "content": "x"}], reasoning_effort="max")
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="7m-x", messages=[{"role": "user", "content": "x"}])
    surrogate = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, headers={"Content-Type": "application/json"},
                           content=b'{"model": "7m", "messages": [{"role": "user", "content": "a\\udc80"}]}')
    assert surrogate.status_code == 400 and surrogate.json()["error"]["param"] == "messages"


def test_models_health_and_unknown_paths(server):
    assert [m.id for m in client(server).models.list()] == ["7m"]
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    missing = httpx.get(f"{server.url}/v1/nothing", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


# -- slots, queue, API key, shutdown: a server of long answers (-n 2048), one slot -----------------------------
@pytest.fixture(scope="module")
def busy_server():
    with LiveServer("7m", "--engine", "numpy", "-n", "2048", "-t", "0", "--max-queue", "1", "--api-key", KEY) as s:
        yield s


def test_api_key_is_checked(busy_server):
    with pytest.raises(openai.AuthenticationError):
        client(busy_server, "wrong").models.list()
    missing = httpx.post(f"{busy_server.url}/v1/completions", json={"model": "7m", "prompt": "Hi"}, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    # checked before the body: an unauthenticated client learns nothing of the vocabulary or the fields
    for body in ({"model": "7m", "prompt": [10**9]}, {"model": "7m", "prompt": "Hi", "max_tokens": "five"}):
        refused = httpx.post(f"{busy_server.url}/v1/completions", json=body, timeout=10)
        assert refused.status_code == 401
        assert "vocabulary" not in refused.text and "max_tokens" not in refused.text
    assert client(busy_server, KEY).completions.create(model="7m", prompt="Hi", max_tokens=1).choices


def test_client_leaving_mid_stream_frees_its_slot(busy_server):
    api = client(busy_server, KEY)
    before = metric(metrics(busy_server), "cupy_getp_requests_total", endpoint="completions", outcome="cancelled")
    stream = api.completions.create(model="7m", prompt="Hello", max_tokens=2000, stream=True)
    chunks = iter(stream)
    next(chunks), next(chunks)
    assert metric(metrics(busy_server), "cupy_getp_running_slots") == 1
    stream.close()
    # 2000 tokens take seconds: the slot is free long before the answer could have ended
    assert wait_for(lambda: metric(metrics(busy_server), "cupy_getp_running_slots") == 0, timeout=1.5)
    after = metric(metrics(busy_server), "cupy_getp_requests_total", endpoint="completions", outcome="cancelled")
    assert after == (before or 0) + 1
    assert api.completions.create(model="7m", prompt="Hi", max_tokens=2).choices[0].finish_reason == "length"


def test_client_leaving_while_waiting_for_a_whole_answer_frees_its_slot(busy_server):
    before = metric(metrics(busy_server), "cupy_getp_requests_total", endpoint="completions", outcome="cancelled")
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{busy_server.url}/v1/completions", json={"model": "7m", "prompt": "Hello", "max_tokens": 2000},
                   headers={"Authorization": f"Bearer {KEY}"}, timeout=0.5)
    assert wait_for(lambda: metric(metrics(busy_server), "cupy_getp_running_slots") == 0, timeout=1.5)
    after = metric(metrics(busy_server), "cupy_getp_requests_total", endpoint="completions", outcome="cancelled")
    assert after == (before or 0) + 1


def test_full_queue_answers_429_with_retry_after(busy_server):
    api = client(busy_server, KEY)
    running = api.completions.create(model="7m", prompt="Hello", max_tokens=2000, stream=True)
    next(iter(running))  # in the one slot
    queued = {}
    waiter = threading.Thread(target=lambda: queued.update(
        answer=api.completions.create(model="7m", prompt="Hi", max_tokens=2)))
    waiter.start()
    assert wait_for(lambda: metric(metrics(busy_server), "cupy_getp_queue_depth") == 1)
    with pytest.raises(openai.RateLimitError) as refused:
        api.completions.create(model="7m", prompt="Hi", max_tokens=2)
    assert refused.value.response.headers["retry-after"].isdigit()
    assert refused.value.body["code"] == "queue_full"
    running.close()  # the queued request gets the slot
    waiter.join(30)
    assert queued["answer"].choices[0].finish_reason == "length"


def test_sigterm_while_streaming_ends_the_stream_cleanly_and_exits():
    with LiveServer("7m", "--engine", "numpy", "-n", "2048", "-t", "0", "--drain-timeout", "1") as server:
        api = client(server)
        stream = iter(api.completions.create(model="7m", prompt="Hello", max_tokens=2000, stream=True))
        next(stream)
        server.signal(signal.SIGTERM)
        signalled = time.monotonic()
        rest = list(stream)  # ends, without an error, when the grace period is over
        assert rest and rest[-1].choices[0].finish_reason == "abort"
        assert time.monotonic() - signalled < 10
        assert server.wait(timeout=30) == 128 + signal.SIGTERM
        assert "interrupted (SIGTERM)" in server.stderr()
        with pytest.raises(openai.APIConnectionError):
            api.completions.create(model="7m", prompt="Hi", max_tokens=1)


def test_a_port_in_use_is_refused_before_the_model_loads():
    import socket

    from conftest import cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # the serve extra's too
        result = cli("serve", "7m", "--engine", "numpy", "--port", str(port), timeout=60, env={"PYTHONPATH": path})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "synthetic preset" not in result.stderr  # refused before the model was even described


@pytest.mark.gpu
def test_20b_smoke():
    with LiveServer("20b", "--engine", "cupy", "-n", "512", "-t", "0", "--batch", "8", start_timeout=600) as server:
        api = client(server)
        whole = api.completions.create(model="20b", prompt="Hello world", max_tokens=16)
        assert whole.choices[0].finish_reason in ("length", "stop") and whole.usage.completion_tokens >= 1
        chunks = list(api.chat.completions.create(model="20b", messages=[{"role": "user", "content": "Hi"}],
                                                  max_tokens=16, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
