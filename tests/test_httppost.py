"""The lean HTTP/1.1 client that carries every SES call, against real servers.

moto answers as SES would (a sent email's MessageId, a refused sender's error code); an
aiohttp server answers in the other shapes HTTP/1.1 allows (chunked, no length with the
connection closed, ``Connection: close``). What a user would notice: emails accepted and
refused as SES says, the refusal's code kept as the reason, and sends that reuse one
connection instead of opening one per email.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from devenv.moto import MotoServer
from emailplan.sender.httppost import HttpError, HttpPoster
from emailplan.sender.rendering import RenderedEmail
from emailplan.sender.ses import SesClient, SesPermanentError
from emailplan.sender.settings import SenderSettings


def _email(sender: str, n: int) -> RenderedEmail:
    raw = (
        f"From: {sender}\r\nTo: user{n}@example.com\r\nSubject: hello {n}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    ).encode()
    return RenderedEmail(
        raw=raw,
        from_address=sender,
        to_address=f"user{n}@example.com",
        tags={"plan": "p1"},
        configuration_set=None,
    )


async def test_sends_through_moto(aws: MotoServer, ses_identity: None) -> None:
    # moto's server closes every connection after its answer (``Connection: close``): each
    # send takes a fresh one, and none is reused after the server said so.
    async with SesClient(SenderSettings()) as ses:
        ids = [await ses.send(_email("news@example.com", n)) for n in range(5)]
        more = await asyncio.gather(*(ses.send(_email("news@example.com", n)) for n in range(20)))
        assert len({*ids, *more}) == 25 and all(ids)
        assert ses._http is not None and ses._http.connections_opened == 25
        assert await ses.max_send_rate() is not None


async def test_a_refused_sender_fails_with_ses_code(aws: MotoServer, ses_identity: None) -> None:
    async with SesClient(SenderSettings()) as ses:
        with pytest.raises(SesPermanentError) as refused:
            await ses.send(_email("stranger@unverified.example", 1))
        assert refused.value.code == "MessageRejected"
        # the connection stays usable after an error answer
        assert await ses.send(_email("news@example.com", 2))


async def _shapes(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    shape = request.path.strip("/")
    if shape == "chunked":
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for part in (b'{"echo":', body, b"}"):
            await response.write(part)
        await response.write_eof()
        return response
    if shape == "close":
        return web.Response(body=b"bye:" + body, headers={"Connection": "close"})
    return web.Response(body=b"ok:" + body, status=201, headers={"x-amzn-ErrorType": "Nope"})


@pytest.fixture
async def shapes() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{shape}", _shapes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_answers_of_every_http11_shape_are_read_whole(shapes: str) -> None:
    poster = HttpPoster(shapes, limit=4)
    try:
        plain = await poster.post("/plain", b"x" * 70000, {"Content-Type": "application/json"})
        assert (plain.status, plain.body) == (201, b"ok:" + b"x" * 70000)
        assert plain.headers["x-amzn-errortype"] == "Nope"
        chunked = await poster.post("/chunked", b"[1,2]", {})
        assert chunked.body == b'{"echo":[1,2]}'
        assert poster.connections_opened == 1  # both on the same kept-alive connection
        closing = await poster.post("/close", b"z", {})
        assert closing.body == b"bye:z"
        again = await poster.post("/plain", b"y", {})
        assert again.body == b"ok:y"
        assert poster.connections_opened == 2  # the server closed the first: a new one
    finally:
        await poster.close()


async def test_a_server_that_is_not_http_is_an_oserror() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    poster = HttpPoster(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(HttpError):
            await poster.post("/", b"{}", {})
        assert isinstance(HttpError("x"), OSError)  # the SES client's transient errors
    finally:
        await poster.close()
        server.close()
        await server.wait_closed()


class _ThreadServer:
    """An HTTP server on its own thread: it answers while the test's event loop is frozen."""

    def __init__(self, delay: float) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.delay = delay
        self.requested = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            self.requested.set()
            time.sleep(self.delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nsent")
            conn.recv(1)  # until the client goes

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


FROZEN_CLIENT = """
import asyncio, sys, uvloop
from emailplan.sender.httppost import HttpPoster

async def main():
    poster = HttpPoster("http://127.0.0.1:" + sys.argv[1], timeout=float(sys.argv[2]))
    try:
        answer = await poster.post("/", b"{}", {})
        print(answer.status, answer.body.decode(), flush=True)
    except TimeoutError:
        print("timeout", flush=True)
    await poster.close()

uvloop.run(main())
"""


@pytest.mark.parametrize("server_delay", [0.5, 1.5])
def test_an_answer_that_came_while_the_process_was_stopped_is_read_not_timed_out(
    server_delay: float,
) -> None:
    """A pod stopped past a request's deadline (SIGSTOP, a cgroup or VM freeze, CPU starvation)
    finds SES's answer in its socket when it runs again: giving up on it would send the email
    twice. The server answers while the client is stopped (just after the request, or later)."""
    server = _ThreadServer(server_delay)
    client = subprocess.Popen(
        [sys.executable, "-c", FROZEN_CLIENT, str(server.port), "1.2"], stdout=subprocess.PIPE
    )
    try:
        server.requested.wait(30)  # the request is written: the client waits for its answer
        client.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # the deadline passes while the client is stopped; the answer arrives
        client.send_signal(signal.SIGCONT)
        out, _ = client.communicate(timeout=30)
        assert out.decode().strip() == "200 sent"
    finally:
        client.kill()
        server.close()


async def test_a_server_that_never_answers_times_out() -> None:
    server = _ThreadServer(5.0)
    poster = HttpPoster(f"http://127.0.0.1:{server.port}", timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await poster.post("/", b"{}", {})
    finally:
        await poster.close()
        server.close()
