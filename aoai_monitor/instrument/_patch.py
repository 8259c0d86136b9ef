"""Patching the openai resource classes, and the traced stream classes that end a span when a stream ends.

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
        return traced_stream(result, call, False) if call.stream and not call.ended else result
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
        return traced_stream(result, call, True) if call.stream and not call.ended else result
    return create


def _traced_sync(base: type) -> type:
    class TracedStream(base):
        """The SDK's Stream of a traced call: records chunks, hides the usage chunk the caller did not ask
        for, and ends the span at the end, on close, on error or when dropped unread."""

        __slots__ = ()  # nothing added to the SDK class's layout, so an instance's class can be swapped
        _aoai_call: Call

        def __iter__(self):
            call = self._aoai_call
            record = call.chunk if call.kind == "chat" else call.event
            # The SDK's chunk generator, which Stream.__iter__ only re-yields: iterating it directly saves a
            # generator layer (~4 µs a stream); the public iteration stays the fallback.
            chunks = self.__dict__.get("_iterator")
            try:
                for item in chunks if chunks is not None else super().__iter__():
                    if record(item) is not False:
                        yield item
            except GeneratorExit:  # the caller stopped reading (break, or dropped the loop)
                call.end()
                raise
            except BaseException as exc:
                call.stream_failed(exc)
                raise
            call.end()

        def __next__(self):
            call = self._aoai_call
            while True:
                try:
                    item = super().__next__()
                except StopIteration:
                    call.end()
                    raise
                except BaseException as exc:
                    call.stream_failed(exc)
                    raise
                if (call.chunk(item) if call.kind == "chat" else call.event(item)) is not False:
                    return item

        def close(self):
            try:
                return super().close()
            finally:
                self._aoai_call.end()

        def __del__(self):
            self._aoai_call.end()

    return TracedStream


def _traced_async(base: type) -> type:
    class TracedAsyncStream(base):
        """The async twin of _traced_sync's class, for the SDK's AsyncStream."""

        __slots__ = ()
        _aoai_call: Call

        async def __aiter__(self):
            call = self._aoai_call
            record = call.chunk if call.kind == "chat" else call.event
            chunks = self.__dict__.get("_iterator")
            try:
                async for item in chunks if chunks is not None else super().__aiter__():
                    if record(item) is not False:
                        yield item
            except GeneratorExit:
                call.end()
                raise
            except BaseException as exc:
                call.stream_failed(exc)
                raise
            call.end()

        async def __anext__(self):
            call = self._aoai_call
            while True:
                try:
                    item = await super().__anext__()
                except StopAsyncIteration:
                    call.end()
                    raise
                except BaseException as exc:
                    call.stream_failed(exc)
                    raise
                if (call.chunk(item) if call.kind == "chat" else call.event(item)) is not False:
                    return item

        async def close(self):
            try:
                return await super().close()
            finally:
                self._aoai_call.end()

        def __del__(self):
            self._aoai_call.end()

    return TracedAsyncStream


_TRACED_CLASSES: dict[type, type] = {}


def traced_stream(stream, call: Call, is_async: bool):
    """The SDK's stream itself, its class swapped for a traced subclass of its own class.

    Why not a proxy: an object proxy cost ~10 µs a streamed call, and the caller keeps the SDK's own
    object (isinstance, attributes such as `response`) with nothing in between.
    """
    cls = type(stream)
    traced = _TRACED_CLASSES.get(cls)
    if traced is None:
        traced = _TRACED_CLASSES[cls] = (_traced_async if is_async else _traced_sync)(cls)
        traced.__name__ = traced.__qualname__ = cls.__name__
        traced.__module__ = cls.__module__
    stream._aoai_call = call
    stream.__class__ = traced
    return stream
