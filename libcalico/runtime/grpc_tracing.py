"""OpenTelemetry spans for grpc.aio RPCs, on the server and on the client side.

Written here rather than taken from opentelemetry-instrumentation-grpc: its aio server
interceptor iterates every response-streaming handler as an async generator, which breaks
handlers in the `await context.write(...)` style (grpc_health's Watch is one), and its client
interceptor replaces streaming calls with bare iterators. These keep the handler's style and
return the real call object.

Trace context travels as W3C `traceparent` (and `baggage`) gRPC metadata through the global
OpenTelemetry propagator, so a server joins any caller's trace, including a light client that
set the header by hand (see traceparent.py).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

_INSTRUMENTATION = "libcalico.runtime"
_STATUS_ATTR = "rpc.grpc.status_code"


def _method_name(method: str | bytes) -> str:
    # grpc.aio sometimes hands the method over as bytes (grpc/grpc#31092).
    text = method.decode() if isinstance(method, bytes) else method
    return text.lstrip("/")


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _set_status(span: Span, code: grpc.StatusCode, details: str | None = None) -> None:
    span.set_attribute(_STATUS_ATTR, code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, details or code.name))


def _metadata_carrier(metadata: Iterable[Any] | None) -> dict[str, str]:
    """Text metadata as a dict for the propagator (binary `-bin` values are skipped)."""
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if isinstance(value, str):
            carrier[key.lower()] = value
    return carrier


# --- server side -------------------------------------------------------------------------


def _server_code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.OK


def _record_server_error(span: Span, exc: BaseException, context: Any) -> None:
    if isinstance(exc, grpc.aio.AbortError):
        # context.abort(): the code and details were set on the context.
        code = _server_code(context)
        _set_status(span, code if code != grpc.StatusCode.OK else grpc.StatusCode.UNKNOWN)
    elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # The client went away (or the server is stopping) mid-call.
        _set_status(span, grpc.StatusCode.CANCELLED)
    else:
        span.record_exception(exc)
        _set_status(span, grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")


def _exports_nowhere(provider: trace.TracerProvider) -> SdkTracerProvider | None:
    """The provider if it is an SDK one with no span processor (its spans reach no one)."""
    if not isinstance(provider, SdkTracerProvider):
        return None
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", None)
    return provider if processors is not None and not processors else None


class _ServerSpans:
    """Opens the SERVER span of one call, joined to the trace in the caller's metadata.

    When the provider exports nowhere (no span processor, the daemons' default without an
    OTLP endpoint), a full SDK span would be built and thrown away on every call. Then only
    its identity is made: a non-recording span with a fresh span id in the caller's trace (a
    new trace without one), sampled as the SDK's default parent-based sampler would decide.
    Log lines and outgoing calls carry the same ids either way.
    """

    def __init__(self, provider: trace.TracerProvider | None, method: str) -> None:
        self.provider = provider
        self.tracer = trace.get_tracer(_INSTRUMENTATION, tracer_provider=provider)
        self.method = method
        self.attributes = _rpc_attributes(method)

    def open(self, context: Any) -> tuple[Span, object]:
        """Start the span, make it current; `close()` it with the token returned."""
        parent = propagate.extract(_metadata_carrier(context.invocation_metadata()))
        idle = _exports_nowhere(self.provider or trace.get_tracer_provider())
        span: Span
        if idle is not None:
            span = _identity_span(idle, parent)
        else:
            span = self.tracer.start_span(
                self.method,
                context=parent,
                kind=SpanKind.SERVER,
                attributes=self.attributes,
                record_exception=False,
                set_status_on_exception=False,
            )
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def close(span: Span, token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]
        span.end()


def _identity_span(provider: SdkTracerProvider, parent: Context) -> Span:
    caller = trace.get_current_span(parent).get_span_context()
    ids = provider.id_generator
    if caller.is_valid:
        trace_id, flags = caller.trace_id, caller.trace_flags
    else:
        trace_id, flags = ids.generate_trace_id(), TraceFlags(TraceFlags.SAMPLED)
    return NonRecordingSpan(
        SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=caller.trace_state if caller.is_valid else None,
        )
    )


def _wrap_unary_response(behavior: Callable[..., Any], spans: _ServerSpans) -> Callable[..., Any]:
    async def traced(request: Any, context: Any) -> Any:
        span, token = spans.open(context)
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            if span.is_recording():
                _record_server_error(span, exc, context)
            raise
        else:
            if span.is_recording():
                _set_status(span, _server_code(context))
        finally:
            spans.close(span, token)
        return result

    return traced


def _wrap_stream_response(behavior: Callable[..., Any], spans: _ServerSpans) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def traced_generator(request: Any, context: Any) -> AsyncIterator[Any]:
            span, token = spans.open(context)
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                if span.is_recording():
                    _record_server_error(span, exc, context)
                raise
            else:
                if span.is_recording():
                    _set_status(span, _server_code(context))
            finally:
                spans.close(span, token)

        return traced_generator

    if inspect.iscoroutinefunction(behavior):
        # The `await context.write(...)` style: keep it a coroutine function.
        return _wrap_unary_response(behavior, spans)

    # A synchronous generator: grpc.aio runs it as it is; leave it untraced rather than
    # change how it is driven.
    return behavior


def _behavior(fn: Callable[..., Any] | None) -> Callable[..., Any]:
    if fn is None:  # the handler's flags promised this kind of behaviour
        raise TypeError("RPC method handler without a behaviour for its streaming kind")
    return fn


def _traced_handler(
    handler: grpc.RpcMethodHandler[Any, Any], spans: _ServerSpans
) -> grpc.RpcMethodHandler[Any, Any]:
    kwargs: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(_behavior(handler.stream_stream), spans), **kwargs
        )
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(_behavior(handler.stream_unary), spans), **kwargs
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream_response(_behavior(handler.unary_stream), spans), **kwargs
        )
    return grpc.unary_unary_rpc_method_handler(
        _wrap_unary_response(_behavior(handler.unary_unary), spans), **kwargs
    )


# Traced handlers are built once per method; past this many a cache is cleared (a generic
# handler that made a new handler object per call would otherwise grow it without bound).
_MAX_CACHED_HANDLERS = 512


class TracingServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A SERVER span around every RPC, joined to the trace in the caller's metadata."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        # method -> (the service's handler, its traced wrapper): the span is per call, the
        # wrapper is not, so it is made once per method rather than on every call.
        self._handlers: dict[
            str, tuple[grpc.RpcMethodHandler[Any, Any], grpc.RpcMethodHandler[Any, Any]]
        ] = {}

    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: grpc answers UNIMPLEMENTED itself
            return None
        method = _method_name(handler_call_details.method)
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        traced = _traced_handler(handler, _ServerSpans(self._provider, method))
        if len(self._handlers) >= _MAX_CACHED_HANDLERS:
            self._handlers.clear()
        self._handlers[method] = (handler, traced)
        return traced


# --- client side -------------------------------------------------------------------------


class _ClientTracing:
    """Shared by the four client interceptors: start the CLIENT span, inject its context."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(_INSTRUMENTATION, tracer_provider=tracer_provider)
        # Tasks that end streaming spans; held so they are not garbage-collected mid-way.
        self._pending: set[asyncio.Task[None]] = set()

    def _start(self, details: grpc.aio.ClientCallDetails) -> tuple[Span, Any]:
        method = _method_name(details.method)
        span = self._tracer.start_span(
            method, kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
        )
        metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        for key, value in carrier.items():
            metadata[key] = value  # replaces a traceparent the caller may have set
        return span, details._replace(metadata=metadata)  # type: ignore[attr-defined]

    @staticmethod
    def _fail(span: Span, exc: BaseException) -> None:
        if isinstance(exc, grpc.aio.AioRpcError):
            _set_status(span, exc.code(), exc.details())
        elif isinstance(exc, asyncio.CancelledError):
            _set_status(span, grpc.StatusCode.CANCELLED)
        else:
            span.record_exception(exc)
            _set_status(span, grpc.StatusCode.UNKNOWN, f"{type(exc).__name__}: {exc}")
        span.end()

    async def _unary_response(self, start: Callable[[], Awaitable[Any]], span: Span) -> Any:
        """Wait for a unary response here, so the span ends with the call's real status."""
        try:
            call = await start()
            code = await call.code()
            _set_status(span, code, await call.details())
        except BaseException as exc:
            self._fail(span, exc)
            raise
        span.end()
        return call

    async def _stream_response(self, start: Callable[[], Awaitable[Any]], span: Span) -> Any:
        """Return the call at once (the caller reads it); end the span when it is done."""
        try:
            call = await start()
        except BaseException as exc:
            self._fail(span, exc)
            raise

        async def finish() -> None:
            _set_status(span, await call.code(), await call.details())
            span.end()

        def on_done(_: object) -> None:
            task = asyncio.get_running_loop().create_task(finish())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        call.add_done_callback(on_done)
        return call


class _UnaryUnary(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        span, traced = self._start(details)
        return await self._unary_response(lambda: continuation(traced, request), span)


class _StreamUnary(_ClientTracing, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request_iterator: Any
    ) -> Any:
        span, traced = self._start(details)
        return await self._unary_response(lambda: continuation(traced, request_iterator), span)


class _UnaryStream(_ClientTracing, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(  # type: ignore[override]
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request: Any
    ) -> Any:
        span, traced = self._start(details)
        return await self._stream_response(lambda: continuation(traced, request), span)


class _StreamStream(_ClientTracing, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(  # type: ignore[override]
        self, continuation: Callable[..., Awaitable[Any]], details: Any, request_iterator: Any
    ) -> Any:
        span, traced = self._start(details)
        return await self._stream_response(lambda: continuation(traced, request_iterator), span)


def client_interceptors(tracer_provider: trace.TracerProvider | None = None) -> list[Any]:
    """Interceptors giving every RPC on a channel a CLIENT span and W3C trace metadata."""
    return [
        _UnaryUnary(tracer_provider),
        _UnaryStream(tracer_provider),
        _StreamUnary(tracer_provider),
        _StreamStream(tracer_provider),
    ]
