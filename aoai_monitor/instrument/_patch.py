"""Patching the openai resource classes, and the stream proxies that end a span when a stream ends.

Classes are patched (not clients), so every AzureOpenAI / AsyncAzureOpenAI client is covered, including
ones made before instrument(). Calls from clients that are not Azure OpenAI pass straight through to
whatever was installed before us, so opentelemetry-instrumentation-openai-v2 keeps tracing plain OpenAI
clients; Azure calls skip its wrapper (its span would say provider "openai" and lose stream usage) and
get ours instead.
"""

from __future__ import annotations

import functools
import importlib
import types

import wrapt

from ._calls import Call
from ._state import client_info

# (module, class, method, kind, is_async)
TARGETS = (
    ("openai.resources.chat.completions", "Completions", "create", "chat", False),
    ("openai.resources.chat.completions", "AsyncCompletions", "create", "chat", True),
    ("openai.resources.responses", "Responses", "create", "responses", False),
    ("openai.resources.responses", "AsyncResponses", "create", "responses", True),
    ("openai.resources.embeddings", "Embeddings", "create", "embeddings", False),
    ("openai.resources.embeddings", "AsyncEmbeddings", "create", "embeddings", True),
)
_ORIGINALS: dict[tuple[type, str], object] = {}


def patch() -> None:
    for module, cls_name, method, kind, is_async in TARGETS:
        cls = getattr(importlib.import_module(module), cls_name)
        if (cls, method) in _ORIGINALS:
            continue
        current = cls.__dict__[method]
        _ORIGINALS[(cls, method)] = current
        setattr(cls, method, (_async_wrapper if is_async else _sync_wrapper)(kind, current))


def unpatch() -> None:
    for (cls, method), original in _ORIGINALS.items():
        setattr(cls, method, original)
    _ORIGINALS.clear()


def _unwrapped(current):
    """The SDK's method under another instrumentation's wrapt wrapper (openai-v2's), if there is one."""
    # A plain function may carry __wrapped__ too (openai's own decorators): only unwrap wrapper objects.
    # (wrapt proxies __class__, so isinstance says "function"; type() does not lie.)
    return current.__wrapped__ if type(current) is not types.FunctionType and hasattr(current, "__wrapped__") else current


def _sync_wrapper(kind: str, current):
    bare = _unwrapped(current)

    @functools.wraps(bare)
    def create(self, *args, **kwargs):
        info = client_info(self._client)
        if info is None:
            return current.__get__(self, type(self))(*args, **kwargs)
        call = Call(kind, info, kwargs)
        try:
            raw = bare(self, *args, **call.kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        result = call.result(raw)
        return SyncStream(result, call) if call.stream and not call.ended else result
    return create


def _async_wrapper(kind: str, current):
    bare = _unwrapped(current)

    @functools.wraps(bare)
    async def create(self, *args, **kwargs):
        info = client_info(self._client)
        if info is None:
            return await current.__get__(self, type(self))(*args, **kwargs)
        call = Call(kind, info, kwargs)
        try:
            raw = await bare(self, *args, **call.kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        result = call.result(raw)
        return AsyncStream(result, call) if call.stream and not call.ended else result
    return create


class SyncStream(wrapt.ObjectProxy):
    """The SDK's Stream, seen through: records chunks, ends the span at the end, on close or on error."""

    def __init__(self, stream, call: Call):
        super().__init__(stream)
        self._self_call = call
        self._self_record = call.chunk if call.kind == "chat" else call.event

    def __iter__(self):
        return self

    def __next__(self):
        call = self._self_call
        while True:
            try:
                item = self.__wrapped__.__next__()
            except StopIteration:
                call.end()
                raise
            except BaseException as exc:
                call.stream_failed(exc)
                raise
            if self._self_record(item) is not False:
                return item

    def close(self):
        try:
            return self.__wrapped__.close()
        finally:
            self._self_call.end()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self._self_call.end()  # a stream dropped unread still ends its span


class AsyncStream(wrapt.ObjectProxy):
    """The SDK's AsyncStream, seen through (see SyncStream)."""

    def __init__(self, stream, call: Call):
        super().__init__(stream)
        self._self_call = call
        self._self_record = call.chunk if call.kind == "chat" else call.event

    def __aiter__(self):
        return self

    async def __anext__(self):
        call = self._self_call
        while True:
            try:
                item = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                call.end()
                raise
            except BaseException as exc:
                call.stream_failed(exc)
                raise
            if self._self_record(item) is not False:
                return item

    async def close(self):
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_call.end()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def __del__(self):
        self._self_call.end()
