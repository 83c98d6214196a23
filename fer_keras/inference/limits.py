"""The web server's defences against slow, large and too many requests: a deadline for each request's
headers (uvicorn has none), the upload size limit, a per-request deadline for the body and the wait for
the model, and a cap on the requests queued for the model. Every refusal is the server's JSON error,
`{"error": "..."}`; a 503 carries Retry-After.
"""

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import json
import sys

import anyio
import h11
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

DRAIN_BYTES = 64 * 1024 * 1024  # read and drop at most this much of a refused body before answering
DRAIN_SECONDS = 5.0
RETRY_AFTER = 5  # seconds, in the Retry-After header of a 503


class ClientError(Exception):
    """A request the server refuses, with its HTTP status, a one-line reason and any extra headers."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers


def error_body(message):
    return json.dumps({"error": message}).encode()


class HeaderDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's line and headers: `header_timeout`
    seconds from the connection's opening or from the end of the previous answer, not restarted by bytes
    that arrive (uvicorn's keep-alive timer is, so a client trickling its headers holds a connection for
    ever). Past it, a connection that sent nothing is closed, one with a partial request gets a 408."""

    def __init__(self, *args, header_timeout, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.header_timer = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self):
        self._arm()  # before uvicorn starts on a pipelined request, whose headers then disarm it
        super().on_response_complete()

    def handle_events(self):
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the request's headers are in (or the connection is over)
            self._disarm()

    def connection_lost(self, exc):
        self._disarm()
        super().connection_lost(exc)

    def _arm(self):
        self._disarm()
        self.header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self):
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _expired(self):
        self.header_timer = None
        if self.transport.is_closing():
            return
        if self.conn.trailing_data[0]:  # part of a request: say why before closing
            message = f"request headers not received within {self.header_timeout:g} s"
            body = error_body(message)
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
            self.logger.info("%s:%d - closed: %s", *(self.client or ("?", 0)), message)
        self.transport.close()


def header_deadline(seconds):
    """The protocol for `uvicorn.Config(http=...)`: HeaderDeadline with a `seconds` header timeout."""
    return functools.partial(HeaderDeadline, header_timeout=seconds)


class UploadLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 JSON. A declared Content-Length is
    checked before any byte is read; a chunked body is counted as it arrives and refused when it
    passes the limit, so no more than `max_bytes` is ever held. The bodies of all requests in progress
    together hold at most `budget` bytes: the request whose bytes would pass it gets 503. The rest of
    a refused body is read and dropped (bounded by DRAIN_BYTES and DRAIN_SECONDS) before answering, so
    the client, still sending, is not cut off by a reset before it reads the answer."""

    def __init__(self, app, max_bytes, budget):
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget
        self.held = 0  # bytes received by the requests in progress

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":  # else the client waits for our answer
                await _drain(receive)
            return await _json(scope, send, 413, self.too_large(int(length)))
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                self.held += len(message.get("body", b""))
                if received > self.max_bytes:
                    refusal = ClientError(413, self.too_large(None))
                elif self.held > self.budget:
                    refusal = busy(f"server busy: the uploads in progress hold over {self.budget:,} bytes")
                else:
                    return message
                if message.get("more_body", False):
                    await _drain(receive)
                raise refusal
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            self.held -= received

    def too_large(self, length):
        sent = f"{length:,} bytes, " if length is not None else ""
        return (f"upload too large: {sent}over the limit of {self.max_bytes:,} bytes "
                "(python -m fer_keras.serve --max-upload-mb)")


async def _drain(receive):
    dropped = 0
    with anyio.move_on_after(DRAIN_SECONDS):
        while dropped < DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


async def _json(scope, send, status, message):
    async def nothing():
        return {"type": "http.disconnect"}

    await JSONResponse({"error": message}, status_code=status)(scope, nothing, send)


class ModelQueue:
    """The requests that hold or wait for the model: at most `size` at once, one of them at a time
    decoding its image and running the model (which bounds the memory of decoding to one image). A
    request over the cap, or still waiting at its deadline, gets 503 with Retry-After."""

    def __init__(self, size):
        self.size = size
        self.queued = 0
        self.lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def turn(self, deadline):
        """Hold the model from the moment it is free (at the latest by `deadline`, the loop's clock)."""
        if self.queued >= self.size:
            raise busy(f"server busy: {self.size} requests are already queued for the model")
        self.queued += 1
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.lock.acquire()
            except TimeoutError:
                raise busy("server busy: the model's turn did not come within the request's time limit") from None
            try:
                yield
            finally:
                self.lock.release()
        finally:
            self.queued -= 1


def busy(message):
    return ClientError(503, f"{message}; retry in {RETRY_AFTER} s", headers={"Retry-After": str(RETRY_AFTER)})


async def within(awaitable, deadline, message):
    """`await awaitable`, or ClientError 408 (closing the connection) if it has not ended by `deadline`."""
    try:
        async with asyncio.timeout_at(deadline):
            return await awaitable
    except TimeoutError:
        raise ClientError(408, message, headers={"Connection": "close"}) from None


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name and sys.platform.startswith("linux") else None


def release_memory():
    """Hand freed heap memory back to the system (glibc's malloc_trim): a large image's decoding frees
    hundreds of MB that glibc otherwise keeps for the process. Nothing elsewhere."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
