"""The web server under load: normal clients beside slow ones, and bursts of maximum-size uploads.

Starts `python -m fer_keras.serve` (the shipped model unless `--model`) on a free port of 127.0.0.1 and,
for each M in `--slow`, runs `--normal` clients sending `--requests` photos each, one after the other
(a new connection per request, `POST /api/predict`, a 512x600 JPEG with one face), while M slow clients
hang on: a third connect and send nothing, a third trickle the headers a line every 2 s, a third send
headers announcing 100 kB and then the body a byte a second. It reports the normal clients' latency
(p50/p95 of the answered requests), their statuses (200, 503, other or no answer), how many slow
clients the server cut off within the phase, and the server's peak memory (VmHWM, reset before each
phase through /proc/PID/clear_refs) against its memory when idle.

With `--big K`, K clients then upload at once a maximum-size image (a JPEG of just under `--max-upload-mb`
and 40 megapixels, the server's pixel limit), and it reports their statuses, latency, the peak memory,
and the memory some seconds after the last answer.

    PYTHONPATH=. python benchmarks/bench_load.py [--model PATH] [--normal 8] [--requests 5]
        [--slow 0 32] [--big 32] [--max-upload-mb 10] [--json OUT]
"""

import argparse
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BIG_PIXELS = (6400, 6200)  # 39.7 megapixels, under the server's 40-megapixel limit
SLOW_KINDS = ("idle", "headers", "body")


class Server:
    """A `python -m fer_keras.serve` process on a free port; its RSS figures from /proc."""

    def __init__(self, args):
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "fer_keras.serve", "--port", "0", *args], cwd=REPO,
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        ready = threading.Event()
        self.port = None

        def read():
            for line in self.process.stdout:
                self.lines.append(line)
                found = re.search(r"serving http://127\.0\.0\.1:(\d+)/", line)
                if found:
                    self.port = int(found.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(300) or self.port is None:
            self.stop()
            raise SystemExit("the server did not start:\n" + "".join(self.lines))

    def memory(self, field):
        """VmRSS or VmHWM of the server process, in MB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024

    def reset_peak(self):
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def post(port, body, timeout=120):
    """(status or 'no answer', seconds) of one `POST /api/predict` on a new connection."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/api/predict", body=body, headers={"Content-Type": "image/jpeg"})
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        status = "no answer"
    finally:
        connection.close()
    return status, time.perf_counter() - start


def slow_client(port, kind, stop, cut):
    """Hang on to the server until `stop`, the way `kind` says; count in `cut` a server that closed on us."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(0.2)
    lines = [b"POST /api/predict HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"Content-Type: image/jpeg\r\n",
             b"Content-Length: 100000\r\n", b"\r\n"]
    if kind == "body":
        sock.sendall(b"".join(lines))
    pending = {"idle": [], "headers": lines, "body": [b"\xff"] * 100_000}[kind]
    every = {"idle": 1.0, "headers": 2.0, "body": 1.0}[kind]
    try:
        while not stop.wait(every):
            if pending:
                sock.sendall(pending.pop(0))
            try:
                if sock.recv(65536) == b"":
                    raise ConnectionError
            except TimeoutError:
                pass
    except OSError:
        cut[kind] += 1
    finally:
        sock.close()


def normal_phase(server, photo, n_normal, n_requests, n_slow):
    """Latencies and statuses of the normal clients while `n_slow` slow ones hang on."""
    stop, cut = threading.Event(), Counter()
    slow = [threading.Thread(target=slow_client, args=(server.port, SLOW_KINDS[i % 3], stop, cut), daemon=True)
            for i in range(n_slow)]
    for thread in slow:
        thread.start()
    time.sleep(3 if n_slow else 0)  # the slow clients settle in (the headers ones have sent a line)
    server.reset_peak()
    results = []

    def client():
        for _ in range(n_requests):
            results.append(post(server.port, photo))

    wall = run_all([threading.Thread(target=client) for _ in range(n_normal)])
    peak = server.memory("VmHWM")
    stop.set()
    for thread in slow:
        thread.join()
    return results, wall, peak, dict(cut)


def run_all(threads):
    """Start `threads` together, wait for all of them; the seconds it took."""
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def big_image(max_bytes):
    """A JPEG of BIG_PIXELS pixels, noisy enough to be just under `max_bytes`."""
    from PIL import Image

    width, height = BIG_PIXELS
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], -1)
    noise = np.random.default_rng(0).normal(0, 1, base.shape).astype(np.float32)
    for sigma in (15, 12, 9, 6, 3, 0):
        buffer = io.BytesIO()
        Image.fromarray(np.clip(base + sigma * noise, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=80)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
    raise SystemExit(f"cannot make a {width}x{height} JPEG under {max_bytes} bytes")


def big_phase(server, data, n_big):
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(server.port, data, timeout=600)))
               for _ in range(n_big)]
    server.reset_peak()
    wall = run_all(threads)
    peak = server.memory("VmHWM")
    time.sleep(5)
    return results, wall, peak, server.memory("VmRSS")


def summary(results):
    statuses = Counter(str(status) for status, _ in results)
    answered = [seconds for status, seconds in results if status == 200]
    p50, p95 = (np.percentile(answered, [50, 95]) if answered else (float("nan"),) * 2)
    return {"requests": len(results), "statuses": dict(statuses), "p50_s": float(p50), "p95_s": float(p95)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model for the server (default: the shipped model)")
    parser.add_argument("--normal", type=int, default=8, help="normal clients (default 8)")
    parser.add_argument("--requests", type=int, default=5, help="requests per normal client (default 5)")
    parser.add_argument("--slow", type=int, nargs="*", default=[0, 32], help="slow clients, one phase each")
    parser.add_argument("--big", type=int, default=32, help="concurrent maximum-size uploads (0: none)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="the server's upload limit (default 10)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    from matplotlib import cbook

    photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    server_args = ["--max-upload-mb", str(args.max_upload_mb)] + (["--model", args.model] if args.model else [])
    server = Server(server_args)
    figures = {"server": server_args, "phases": []}
    try:
        post(server.port, photo)  # warm-up: first-call tracing
        idle = server.memory("VmRSS")
        figures["idle_rss_mb"] = idle
        print(f"server idle: {idle:.0f} MB RSS", flush=True)
        for n_slow in args.slow:
            results, wall, peak, cut = normal_phase(server, photo, args.normal, args.requests, n_slow)
            row = {"phase": f"{args.normal} normal + {n_slow} slow", **summary(results), "wall_s": wall,
                   "peak_rss_mb": peak, "slow_cut_off": cut}
            figures["phases"].append(row)
            print(f"{row['phase']}: {row['statuses']}, p50 {row['p50_s']:.2f} s, p95 {row['p95_s']:.2f} s, "
                  f"wall {wall:.1f} s, peak {peak:.0f} MB (+{peak - idle:.0f}), slow clients cut off: {cut}",
                  flush=True)
        if args.big:
            data = big_image(int(args.max_upload_mb * 1024 * 1024))
            results, wall, peak, after = big_phase(server, data, args.big)
            width, height = BIG_PIXELS
            row = {"phase": f"{args.big} concurrent {width}x{height} JPEG uploads of {len(data):,} bytes",
                   **summary(results), "wall_s": wall, "peak_rss_mb": peak, "rss_after_mb": after}
            figures["phases"].append(row)
            print(f"{row['phase']}: {row['statuses']}, p50 {row['p50_s']:.1f} s, p95 {row['p95_s']:.1f} s, "
                  f"wall {wall:.1f} s, peak {peak:.0f} MB (+{peak - idle:.0f}), 5 s later {after:.0f} MB",
                  flush=True)
    finally:
        server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
