"""A local web page and JSON API for facial expressions: upload a photo or take one with the webcam,
see each face boxed with its seven probabilities and a Grad-CAM overlay.

`python -m fer_keras.serve [--model PATH ...] [--tta [flip|flip_rotate]] [--detector haar|dnn] [--host 127.0.0.1]
[--port 8000] [--max-upload-mb 10] [--header-timeout 10] [--request-timeout 30]`

`POST /api/predict` takes the image as the multipart form field `file` or as the raw request body and
answers `{"faces": [...], "image": {"width": W, "height": H}}`, the faces being what
`EmotionRecognizer.detect` returns (`face.to_dict()`), left to right. `?gradcam=1` adds a Grad-CAM
overlay (a PNG data URL, `gradcam`, and the class it explains, `gradcam_class`) to each face where the
model has convolutional layers. Errors are JSON `{"error": "..."}`: 400 (no image sent), 408 (the
headers or the body too slow), 413 (over the upload or pixel limit), 415 (not an image), 422 (an
image under 16 pixels a side, too small to hold a face), 503 with Retry-After (the server busy).
`GET /api/info` describes the model and the limits.

Limits (fer_keras.inference.limits): a request's line and headers must arrive within `--header-timeout`
seconds of the connection's opening (or of the previous answer); its body must arrive, and its turn at
the model come, within `--request-timeout` seconds of its headers. One image at a time is decoded and
run through the model, which bounds the memory of decoding; at most MAX_QUEUED requests hold or wait
for it, and the bodies of all requests in progress hold at most MAX_BODIES uploads' worth of bytes.
Connections still sending their request are not counted, so slow clients do not turn others away.
"""

import argparse
import base64
import io
import ipaddress
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

from fer_keras.core.cli import ArgumentParser, user_errors
from fer_keras.errors import FerError, ImageError
from fer_keras.inference.limits import ClientError
from fer_keras.inference.tta import add_tta_argument

WEB = Path(__file__).resolve().parent / "web"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 10.0
MAX_PIXELS = 40_000_000  # a decoded image above this many pixels is refused (decompression bombs)
HEADER_TIMEOUT = 10.0  # seconds for a request's line and headers
REQUEST_TIMEOUT = 30.0  # seconds from a request's headers for its body and its turn at the model
MAX_QUEUED = 32  # requests holding or waiting for the model; more get 503
MAX_BODIES = 128  # uploads' worth (--max-upload-mb each) of request bodies held at once; more get 503
GRADCAM_SIZE = 144  # pixels per side of a Grad-CAM overlay


class Engine:
    """The one recognizer of a server and what it needs per request: `predict(data, gradcam)` on the
    bytes of an uploaded image. Model calls are serialised by a lock: the model is one object shared
    by every request, and one call already uses every core."""

    def __init__(self, recognizer, description="", max_pixels=MAX_PIXELS):
        self.recognizer = recognizer
        self.description = description
        self.max_pixels = max_pixels
        self.lock = threading.Lock()
        self.explainer, self.gradcam_note = _explainer(recognizer)

    def info(self):
        return {
            "model": self.description,
            "classes": list(_class_names()),
            "gradcam": self.explainer is not None,
            "gradcam_note": self.gradcam_note,
            "max_pixels": self.max_pixels,
        }

    def predict(self, data, gradcam=False):
        """The JSON answer for one uploaded image (bytes); ClientError for what is not a usable image."""
        rgb = self.decode(data)
        with self.lock:
            try:
                found = self.recognizer.detect(rgb, color="rgb")
            except ImageError as exc:  # an image too small to hold a face
                raise ClientError(422, str(exc)) from None
            overlays = self.explainer(rgb, found) if gradcam and self.explainer and found else None
        faces = [_jsonable(face.to_dict()) for face in found]
        for face, (overlay, explained) in zip(faces, overlays or [], strict=False):
            face["gradcam"], face["gradcam_class"] = overlay, explained
        return {"faces": faces, "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])}}

    def decode(self, data):
        """An upload (bytes) as a uint8 RGB array, the way `fer_keras.inference.faces` reads image files (EXIF
        orientation applied, as browsers show it); ClientError for an empty, unreadable or huge image."""
        from PIL import Image, ImageOps, UnidentifiedImageError

        from fer_keras.inference import faces

        if not data:
            raise ClientError(400, "the upload is empty: send an image (JPEG, PNG, ...)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as image:
                    if image.width * image.height > self.max_pixels:
                        raise ClientError(413, f"image too large: {image.width}x{image.height} pixels "
                                               f"(limit {self.max_pixels / 1e6:g} megapixels)")
                    image.load()
                    return faces.to_rgb(ImageOps.exif_transpose(image))
        except ClientError:
            raise
        except UnidentifiedImageError:
            raise ClientError(415, "not an image that can be read (JPEG, PNG, GIF, BMP, WebP, TIFF, ...)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ClientError(413, f"image too large: {exc}") from None
        except Exception as exc:  # noqa: BLE001  (Pillow's decoders raise many types for a damaged file)
            raise ClientError(415, f"cannot read the image: {str(exc) or type(exc).__name__}") from None


def _class_names():
    from fer_keras.constants import CLASS_NAMES

    return CLASS_NAMES


def _jsonable(value):
    """`face.to_dict()` with NumPy scalars and tuples made plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _explainer(recognizer):
    """(function(rgb, faces) -> [(Grad-CAM PNG data URL, class explained), ...], a note) for a recognizer
    holding a convolutional Keras model, else (None, the reason there is no Grad-CAM)."""
    from fer_keras.inference.gradcam import target_layer

    predictor = recognizer.predictor
    if not predictor.keras_models:
        return None, ("Grad-CAM needs the Keras model's gradients; this model is a SavedModel or TFLite "
                      "file, which does not provide them (serve the .keras file or run folder to see it)")
    for model in predictor.keras_models:
        try:
            layer = target_layer(model)
        except FerError:
            continue
        note = f"Grad-CAM of layer {layer}"
        if len(predictor.models) > 1:
            note += f" of {model.name}, one of the {len(predictor.models)} models of the ensemble"
        return _gradcam_function(model, layer), note
    return None, ("Grad-CAM needs a convolutional feature map; this model has no convolutional layer "
                  "(an MLP or a ViT)")


def _gradcam_function(model, layer):
    def explain(rgb, found):
        from fer_keras.constants import CLASS_NAMES
        from fer_keras.inference import faces
        from fer_keras.inference.gradcam import grad_cam, overlay

        crops = faces.face_crops(faces.rgb_to_gray(rgb), [face.box for face in found])  # what `detect` classified
        heatmaps, probs = grad_cam(model, crops, layer)  # of this model's top class
        return [(_png_data_url(overlay(crop, heat)), CLASS_NAMES[int(p.argmax())])
                for crop, heat, p in zip(crops, heatmaps, probs, strict=True)]

    return explain


def _png_data_url(picture):
    """A uint8 RGB array, scaled to GRADCAM_SIZE pixels a side, as a PNG data URL."""
    from PIL import Image

    picture = Image.fromarray(picture, "RGB").resize((GRADCAM_SIZE, GRADCAM_SIZE), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- the web application -------------------------------------------------------------------------


def create_app(engine, max_upload_bytes, request_timeout=REQUEST_TIMEOUT, max_queued=MAX_QUEUED):
    """The Starlette application: the page at `/`, its files under `/static`, the JSON API under `/api`."""
    import asyncio

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from fer_keras.inference.limits import ModelQueue, UploadLimit, release_memory, within

    queue = ModelQueue(max_queued)

    async def index(request):
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})

    async def info(request):
        return JSONResponse({**engine.info(), "max_upload_bytes": max_upload_bytes})

    async def predict(request):
        deadline = asyncio.get_running_loop().time() + request_timeout
        gradcam = request.query_params.get("gradcam", "0").lower() in ("1", "true", "yes")
        data = await within(_upload(request), deadline, f"upload not received within {request_timeout:g} s")
        async with queue.turn(deadline):
            if await request.is_disconnected():  # gone while waiting: no need to run the model
                return Response(status_code=204)
            answer = await run_in_threadpool(engine.predict, data, gradcam)
            release_memory()
        return JSONResponse(answer)

    async def client_error(request, exc):
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    async def client_gone(request, exc):
        print(f"fer_keras.inference.serve: client {_address(request)} disconnected during {request.method} "
              f"{request.url.path}", file=sys.stderr, flush=True)
        return Response(status_code=400)  # never delivered

    async def http_error(request, exc):
        message = {404: "not found", 405: f"method {request.method} not allowed here"}.get(exc.status_code, exc.detail)
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    async def server_error(request, exc):
        print(f"fer_keras.inference.serve: error in {request.method} {request.url.path}: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/info", info),
            Route("/api/predict", predict, methods=["POST"]),
            Mount("/static", StaticFiles(directory=WEB), name="static"),
        ],
        middleware=[Middleware(UploadLimit, max_bytes=max_upload_bytes, budget=MAX_BODIES * max_upload_bytes)],
        exception_handlers={ClientError: client_error, ClientDisconnect: client_gone, HTTPException: http_error,
                            Exception: server_error},
    )


async def _upload(request):
    """The uploaded image's bytes: the multipart field `file`, else the raw body."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8, max_part_size=64 * 1024) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ClientError(400, "no image: send it as the multipart form field 'file' "
                                       "(or as the raw request body)")
            return await upload.read()
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
    return bytes(data)


def _address(request):
    return f"{request.client.host}:{request.client.port}" if request.client else "(unknown)"


# --- the command ---------------------------------------------------------------------------------


def load_engine(models, tta=False, detector=None):
    """The recognizer for the `--model` paths (none: the shipped model), loaded once, as an Engine."""
    from fer_keras import EmotionRecognizer
    from fer_keras.inference.detectors import DEFAULT_DETECTOR

    detector = detector or DEFAULT_DETECTOR
    if not models:
        from fer_keras import pretrained

        print(pretrained.describe(), flush=True)
        return Engine(EmotionRecognizer(tta=tta, detector=detector), f"the shipped model {pretrained.DEFAULT}")
    recognizer = EmotionRecognizer.load(models if len(models) > 1 else models[0], tta=tta, detector=detector)
    return Engine(recognizer, " + ".join(str(m) for m in models))


def listen(host, port):
    """A listening socket on host:port (port 0: any free port); OSError in one line if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise FerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_args(argv):
    from fer_keras.inference.detectors import DEFAULT_DETECTOR, DETECTORS

    parser = ArgumentParser(prog="python -m fer_keras.serve", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append",
                        help="run folder, .keras file, SavedModel folder or .tflite file; repeat for an "
                             "ensemble (default: the shipped model)")
    add_tta_argument(parser)
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, choices=list(DETECTORS),
                        help=f"face detector (default {DEFAULT_DETECTOR}; see fer_keras.inference.detectors)")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on (default {DEFAULT_HOST}, this computer only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest accepted upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    parser.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT,
                        help=f"seconds for a request's line and headers to arrive (default {HEADER_TIMEOUT:g})")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT,
                        help="seconds from a request's headers for its body to arrive and its turn at the model "
                             f"to come (default {REQUEST_TIMEOUT:g})")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    if not 0 < args.max_upload_mb <= 1024:
        parser.error(f"--max-upload-mb must be above 0 and at most 1024, got {args.max_upload_mb:g}")
    for name in ("header_timeout", "request_timeout"):
        if not 0 < getattr(args, name) <= 3600:
            parser.error(f"--{name.replace('_', '-')} must be above 0 and at most 3600 s, got {getattr(args, name):g}")
    return args


@user_errors(interrupted="stopped")
def main(argv=None):
    args = _parse_args(argv)
    sock = listen(args.host, args.port)  # before loading the model: a taken port fails at once
    import uvicorn

    from fer_keras.inference.limits import header_deadline

    with sock:
        start = time.perf_counter()
        engine = load_engine(args.model, args.tta, args.detector)
        max_bytes = int(args.max_upload_mb * 1024 * 1024)
        host, port = sock.getsockname()[:2]
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # every address: show this machine's
        url = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}/"
        cam = engine.gradcam_note if engine.explainer else f"no Grad-CAM ({engine.gradcam_note})"
        print(f"fer_keras.inference.serve: model loaded in {time.perf_counter() - start:.1f} s ({engine.description}); {cam}",
              flush=True)
        if not _is_loopback(args.host):
            print(f"warning: listening on {args.host}: the page and API are reachable from other machines and "
                  "have no authentication", file=sys.stderr, flush=True)
        print(f"fer_keras.inference.serve: serving {url} (upload limit {max_bytes:,} bytes); Ctrl-C stops", flush=True)
        app = create_app(engine, max_bytes, args.request_timeout)
        config = uvicorn.Config(app, http=header_deadline(args.header_timeout), log_level="info",
                                timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
