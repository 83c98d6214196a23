"""`python -m fer_keras.serve` against hostile clients, over raw sockets on 127.0.0.1: idle connections,
headers and bodies trickled byte by byte, a burst above the queue's cap, concurrent huge images, and
clients that leave mid-upload. One server process (the shipped model, short timeouts) serves the module."""

import http.client
import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from server_process import Server

from fer_keras.inference import serve

HEADER_TIMEOUT = 4  # the server's --header-timeout here, seconds
REQUEST_TIMEOUT = 6  # its --request-timeout
MAX_UPLOAD = 1024 * 1024  # its --max-upload-mb 1, in bytes
BIG = (6400, 6200)  # pixels: just under the server's 40-megapixel limit
PREDICT = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photo():
    """Grace Hopper's portrait (512x600 JPEG, one face), matplotlib's sample photo."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


@pytest.fixture(scope="module")
def server(photo):
    running = Server(["--port", "0", "--max-upload-mb", "1", "--header-timeout", str(HEADER_TIMEOUT),
                      "--request-timeout", str(REQUEST_TIMEOUT)])
    try:
        assert _post(running, photo)[0] == 200  # warm: the model's first call traces it
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def big_jpeg():
    """A smooth 6400x6200 JPEG (a few MB): it decodes to ~120 MB of RGB."""
    width, height = BIG
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    pixels = np.stack([np.broadcast_to(cols, (height, width)), np.broadcast_to(rows, (height, width)),
                       (rows + cols) / 2], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _tiny_jpeg():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "grey").save(buffer, format="JPEG")
    return buffer.getvalue()


def _request(body):
    return PREDICT + b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _connect(server):
    return socket.create_connection(("127.0.0.1", server.port), timeout=60)


def _answer(sock):
    """(status, headers, body) of the response waiting on `sock`."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def _post(server, body):
    with _connect(server) as sock:
        sock.sendall(_request(body))
        return _answer(sock)


def _json_error(status, headers, body):
    assert headers["content-type"] == "application/json", (status, headers, body)
    message = json.loads(body)["error"]
    assert message and "\n" not in message
    return message


def _state(sock):
    """'open' (nothing to read), 'closed' (the server closed it) or the bytes the server sent."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    finally:
        sock.setblocking(True)
    return data or "closed"


def _memory(server, field):
    """VmRSS or VmHWM of the server process, in MB."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024


def test_slow_clients_do_not_starve_the_others(server, photo):
    """36 clients hanging on (idle, trickling headers, trickling a body) while others are served at once:
    connections still sending their request do not count against the cap."""
    slow = []
    try:
        for _ in range(12):
            slow.append(_connect(server))
            slow.append(_connect(server))
            slow[-1].sendall(PREDICT)  # the headers, unfinished
            slow.append(_connect(server))
            slow[-1].sendall(PREDICT + b"Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n\xff\xd8")
        start = time.monotonic()
        for _ in range(4):
            status, _, body = _post(server, photo)
            assert status == 200, body
            assert len(json.loads(body)["faces"]) == 1
        assert time.monotonic() - start < HEADER_TIMEOUT  # so every slow client was still there
        assert [_state(sock) for sock in slow] == ["open"] * len(slow)
    finally:
        for sock in slow:
            sock.close()


def test_slow_requests_time_out(server):
    """An idle connection is closed, trickled headers get 408 after --header-timeout (bytes arriving do not
    reset it), and a trickled body gets 408 after --request-timeout; each answer is the JSON error."""
    idle, headers, body = _connect(server), _connect(server), _connect(server)
    body.sendall(PREDICT + b"Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n")
    trickles = {headers: iter([PREDICT] + [b"X-Slow-%d: 1\r\n" % i for i in range(100)]),
                body: iter([b"\xff"] * 100)}
    start, ended, received = time.monotonic(), {}, {sock: b"" for sock in (idle, headers, body)}
    try:
        while len(ended) < 3 and time.monotonic() - start < HEADER_TIMEOUT + REQUEST_TIMEOUT + 5:
            for sock in set(received) - set(ended):
                state = _state(sock)
                if state == "closed":
                    ended[sock] = time.monotonic() - start
                elif state != "open":
                    received[sock] += state
                elif sock in trickles:
                    sock.sendall(next(trickles[sock]))
            time.sleep(0.25)
    finally:
        for sock in received:
            sock.close()
    assert set(ended) == {idle, headers, body}, "the server kept a slow connection open"
    assert received[idle] == b"" and HEADER_TIMEOUT - 0.5 <= ended[idle] <= HEADER_TIMEOUT + 2
    assert HEADER_TIMEOUT - 0.5 <= ended[headers] <= HEADER_TIMEOUT + 2
    assert REQUEST_TIMEOUT - 0.5 <= ended[body] <= REQUEST_TIMEOUT + 2
    for sock, message in [(headers, f"request headers not received within {HEADER_TIMEOUT} s"),
                          (body, f"upload not received within {REQUEST_TIMEOUT} s")]:
        answer = _answer(_Replay(received[sock]))
        assert answer[0] == 408
        assert _json_error(*answer) == message


class _Replay:
    """Bytes already read from a socket, for http.client.HTTPResponse."""

    def __init__(self, data):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


def test_burst_over_the_cap_rejects_only_the_excess(server, big_jpeg):
    """While one huge image holds the model, a burst of MAX_QUEUED + 8 requests: exactly the excess (9)
    gets 503, the JSON error with Retry-After; the others are answered."""
    blocker = _connect(server)
    blocker.sendall(_request(big_jpeg))
    time.sleep(0.5)  # its turn at the model has come
    tiny = _request(_tiny_jpeg())
    burst = [_connect(server) for _ in range(serve.MAX_QUEUED + 8)]
    try:
        for sock in burst:
            sock.sendall(tiny)
        answers = [_answer(sock) for sock in burst]
        assert _answer(blocker)[0] == 200
    finally:
        for sock in [blocker, *burst]:
            sock.close()
    statuses = [status for status, _, _ in answers]
    assert sorted(set(statuses)) == [200, 503]
    assert statuses.count(503) == len(burst) + 1 - serve.MAX_QUEUED
    for status, headers, body in answers:
        if status == 503:
            assert "queued" in _json_error(status, headers, body)
            assert int(headers["retry-after"]) > 0
        else:
            assert json.loads(body) == {"faces": [], "image": {"width": 64, "height": 64}}


def test_concurrent_huge_images_bounded_memory(server, big_jpeg):
    """Six 40-megapixel images at once are decoded one at a time: the server's peak memory stays within
    1.2 GB of idle (decoding them in parallel took ~0.5 GB each), and is handed back afterwards."""
    idle = _memory(server, "VmRSS")
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(_post(server, big_jpeg))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak = _memory(server, "VmHWM")
    answered = [json.loads(body) for status, _, body in answers if status == 200]
    assert len(answered) >= 1 and all(a["image"] == {"width": BIG[0], "height": BIG[1]} for a in answered)
    assert all(status in (200, 503) for status, _, _ in answers)  # 503: its turn did not come in time
    assert peak - idle < 1200, f"peak {peak:.0f} MB, idle {idle:.0f} MB"
    time.sleep(1)
    assert _memory(server, "VmRSS") - idle < 300


def test_bodies_held_at_once_are_bounded(server, photo):
    """MAX_BODIES maximum-size uploads stalled one byte short hold all that request bodies may: the next
    upload gets 503 (the JSON error, Retry-After) rather than more memory; once they are gone, it is served."""
    stalled = []
    try:
        for _ in range(serve.MAX_BODIES):
            stalled.append(_connect(server))
            stalled[-1].sendall(PREDICT + b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % MAX_UPLOAD
                                + bytes(MAX_UPLOAD - 1))
        deadline = time.monotonic() + REQUEST_TIMEOUT / 2
        while (answer := _post(server, photo))[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the server has not read every stalled byte yet
        assert answer[0] == 503 and "uploads in progress" in _json_error(*answer)
        assert int(answer[1]["retry-after"]) > 0
    finally:
        for sock in stalled:
            sock.close()
    time.sleep(0.5)
    assert _post(server, photo)[0] == 200


def test_client_leaving_mid_upload_logs_one_line(server):
    before = len(server.lines)
    for content_type in (b"image/jpeg", b"multipart/form-data; boundary=XX"):
        with _connect(server) as sock:
            sock.sendall(PREDICT + b"Content-Type: %s\r\nContent-Length: 100000\r\n\r\n" % content_type
                         + b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
                         + b"\xff" * 1000)
            time.sleep(0.2)
    deadline, log = time.monotonic() + 10, ""
    while time.monotonic() < deadline and log.count("disconnected during POST /api/predict") < 2:
        time.sleep(0.1)
        log = "".join(server.lines[before:])
    assert log.count("disconnected during POST /api/predict") == 2, log
    assert "Traceback" not in log and "Exception in ASGI application" not in log


@pytest.mark.parametrize("option", ["--header-timeout", "--request-timeout"])
def test_timeout_options_checked(option, capsys):
    with pytest.raises(SystemExit) as stopped:
        serve.main([option, "0"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: {option} must be above 0")
