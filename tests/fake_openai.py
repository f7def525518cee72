"""A real OpenAI-compatible HTTP server on loopback, serving scripted chat completions.

The tests talk to it with the real `openai` client, so retries, timeouts, headers and the
`usage` block go through the same code paths as against OpenAI, vLLM, Ollama or llama.cpp.
Each POST to `/v1/chat/completions` takes the next item of the script:

- a string: a 200 answer with that content and a `usage` block (4 characters a token);
- `Fail(status)`: that HTTP error (429 carries `retry-after-ms` so the client retries at once);
- `Slow(seconds, content)`: the answer, sent only after `seconds` (past a short client timeout).

An exhausted script answers 500 with a message saying so. Every request body is kept in
`requests`, in order. Use it as a context manager; it stops its thread on exit.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Fail:
    """An HTTP error answer."""

    status: int
    retry_after_ms: int = 10


@dataclass(frozen=True)
class Slow:
    """A good answer sent after a delay."""

    seconds: float
    content: str


def tokens(text: str) -> int:
    """The fake tokenizer: one token per 4 characters, at least 1."""
    return max(1, len(text) // 4)


class FakeOpenAI:
    """Scripted chat-completions endpoint on 127.0.0.1 at a free port; see the module docstring."""

    def __init__(self, script: Iterable[str | Fail | Slow] = (), model: str = "fake-model"):
        self.script: list[str | Fail | Slow] = list(script)
        self.model = model
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def add(self, *items: str | Fail | Slow) -> None:
        with self._lock:
            self.script.extend(items)

    def messages(self, i: int = -1) -> list[dict]:
        """The messages of request `i`."""
        return self.requests[i]["messages"]

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _next(self, body: dict) -> str | Fail | Slow | None:
        with self._lock:
            self.requests.append(body)
            return self.script.pop(0) if self.script else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [
                        {"id": fake.model, "object": "model", "created": 0, "owned_by": "test"}]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                item = fake._next(body)
                if item is None:
                    self._json(500, {"error": {"message": "fake server: script exhausted"}})
                elif isinstance(item, Fail):
                    headers = {"retry-after-ms": str(item.retry_after_ms)}
                    self._json(item.status, {"error": {"message": f"scripted {item.status}",
                                                       "type": "scripted"}}, headers)
                else:
                    if isinstance(item, Slow):
                        deadline = time.monotonic() + item.seconds
                        while time.monotonic() < deadline and not fake._stopping.is_set():
                            time.sleep(0.02)
                        item = item.content
                    self._answer(body, item)

            def _answer(self, body: dict, content: str) -> None:
                prompt = "".join(str(m.get("content") or "") for m in body.get("messages", []))
                usage = {"prompt_tokens": tokens(prompt), "completion_tokens": tokens(content),
                         "total_tokens": tokens(prompt) + tokens(content)}
                self._json(200, {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model", fake.model),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": usage})

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

        return Handler
