"""TEST-ONLY local HTTP server that answers in the Azure OpenAI REST shape, for the real `openai` client.

Paths (api-version in the query, as Azure wants it):
* POST /openai/deployments/{deployment}/chat/completions: JSON, or SSE when "stream": true (a first
  chunk with empty choices and prompt_filter_results as Azure sends, three content chunks, a finish chunk,
  and the usage chunk only when stream_options.include_usage is set).
* POST /openai/deployments/{deployment}/embeddings
* POST /openai/responses (model = deployment), JSON or SSE events.
A user message "trigger-429" gets 429 (rate limit); "trigger-content-filter" gets Azure's 400
content_filter error. Every answer carries apim-request-id, x-request-id and x-ms-region headers, and
`server.calls` records each request (path, body, ids) so tests can write the matching gateway log.
Ids are deterministic: the n-th call gets chatcmpl-000n / resp_000n and request ids derived from n.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MODEL = "gpt-4o-2024-08-06"
REGION = "East US"
STREAM_TEXT = ["Hello", " from", " Azure"]
USAGE = {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22,
         "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 0}}
_NS = uuid.UUID("6f1d7c5e-0000-4000-8000-000000000000")


class AzureOpenAIStandin:
    def __init__(self) -> None:
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def next_call(self, path: str, body: dict, query: dict) -> dict:
        with self._lock:
            n = len(self.calls) + 1
            call = {"n": n, "path": path, "body": body, "api_version": query.get("api-version", [None])[0],
                    "apim_request_id": str(uuid.uuid5(_NS, f"apim-{n}")),
                    "x_request_id": str(uuid.uuid5(_NS, f"req-{n}"))}
            self.calls.append(call)
        return call


def _handler(standin: AzureOpenAIStandin):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            url = urlsplit(self.path)
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            call = standin.next_call(url.path, body, parse_qs(url.query))
            n = call["n"]
            if url.path.endswith("/chat/completions"):
                deployment = url.path.split("/deployments/", 1)[1].split("/", 1)[0]
                last = (body.get("messages") or [{}])[-1].get("content")
                if last == "trigger-429":
                    return self._json(429, {"error": {"code": "429", "message": "Requests to the ChatCompletions_Create "
                                                      "Operation have exceeded the rate limit."}}, call, {"retry-after": "1"})
                if last == "trigger-content-filter":
                    return self._json(400, _content_filter_error(), call)
                call["response_id"] = f"chatcmpl-{n:04d}"
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    return self._sse(_chat_chunks(call["response_id"], include_usage), call)
                return self._json(200, _chat_completion(call["response_id"], deployment), call)
            if url.path.endswith("/embeddings"):
                inputs = body.get("input")
                inputs = [inputs] if isinstance(inputs, str) else inputs
                return self._json(200, {"object": "list", "model": "text-embedding-3-small",
                                        "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                                                 for i, _ in enumerate(inputs)],
                                        "usage": {"prompt_tokens": 5 * len(inputs), "total_tokens": 5 * len(inputs)}}, call)
            if url.path.endswith("/responses"):
                call["response_id"] = f"resp_{n:04d}"
                response = _response_object(call["response_id"], "completed")
                if body.get("stream"):
                    return self._sse(_response_events(call["response_id"]), call)
                return self._json(200, response, call)
            return self._json(404, {"error": {"code": "404", "message": "Resource not found"}}, call)

        def _headers(self, call: dict) -> None:
            self.send_header("apim-request-id", call["apim_request_id"])
            self.send_header("x-request-id", call["x_request_id"])
            self.send_header("x-ms-region", REGION)

        def _json(self, status: int, payload: dict, call: dict, extra: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self._headers(call)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _sse(self, events: list[dict], call: dict) -> None:
            data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self._headers(call)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _chat_completion(response_id: str, deployment: str) -> dict:
    return {"id": response_id, "object": "chat.completion", "created": 1735689600, "model": MODEL,
            "system_fingerprint": "fp_test",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": f"Hello from {deployment}"},
                         "content_filter_results": {}}],
            "usage": USAGE}


def _chat_chunks(response_id: str, include_usage: bool) -> list[dict]:
    base = {"id": response_id, "object": "chat.completion.chunk", "created": 1735689600, "model": MODEL,
            "system_fingerprint": "fp_test"}
    chunks = [{"id": "", "object": "", "created": 0, "model": "", "choices": [],
               "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}]
    chunks.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
    for text in STREAM_TEXT:
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        for c in chunks[1:]:
            c["usage"] = None
        chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17}})
    return chunks


def _content_filter_error() -> dict:
    cat = {"filtered": False, "severity": "safe"}
    return {"error": {"code": "content_filter", "status": 400, "param": "prompt",
                      "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
                      "innererror": {"code": "ResponsibleAIPolicyViolation",
                                     "content_filter_result": {"hate": cat, "self_harm": cat, "sexual": cat,
                                                               "violence": {"filtered": True, "severity": "medium"},
                                                               "jailbreak": {"filtered": False, "detected": False}}}}}


def _response_object(response_id: str, status: str, with_output: bool = True) -> dict:
    output = [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": "".join(STREAM_TEXT), "annotations": []}]}] if with_output else []
    return {"id": response_id, "object": "response", "created_at": 1735689600, "model": MODEL, "status": status,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": {"input_tokens": 9, "output_tokens": 3, "total_tokens": 12,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}


def _response_events(response_id: str) -> list[dict]:
    created = _response_object(response_id, "in_progress", with_output=False)
    created.pop("usage")
    events = [{"type": "response.created", "sequence_number": 0, "response": created}]
    for i, text in enumerate(STREAM_TEXT, start=1):
        events.append({"type": "response.output_text.delta", "sequence_number": i, "item_id": "msg_1",
                       "output_index": 0, "content_index": 0, "delta": text, "logprobs": []})
    events.append({"type": "response.completed", "sequence_number": len(STREAM_TEXT) + 1,
                   "response": _response_object(response_id, "completed")})
    return events
