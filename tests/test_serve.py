"""`python -m fer_keras.serve`: the page in a real browser (Debian's headless Chromium driven by
Playwright), the JSON API over HTTP, its limits and errors, and concurrent requests on one model.

One server process (a tiny CNN trained here) serves the module; the photo has three faces, made by
pasting the face of matplotlib's sample photo `grace_hopper.jpg` three times on a background."""

import concurrent.futures
import io
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image, ImageOps
from server_process import Server

from fer_keras.inference import faces as facelib
from fer_keras.inference import serve
from fer_keras.constants import CLASS_NAMES

CHROMIUM = os.environ.get("FER_KERAS_CHROMIUM", "/usr/bin/chromium")
# Headless, and quiet: without the background-networking flags Chromium keeps calling the (closed) network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
MAX_UPLOAD_MB = 1  # small, so that an oversized upload is quick to send
N_FACES = 3

pytestmark = pytest.mark.slow


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder of tiny_cnn trained for one epoch on 400 synthetic faces (a few seconds)."""
    from fer_keras.training import train

    out = tmp_path_factory.mktemp("serve") / "tiny"
    with pytest.MonkeyPatch.context() as env:  # the conftest's environment is per test; this runs before it
        env.setenv("FER_KERAS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        env.setenv("WANDB_MODE", "disabled")
        train.main(["--model", "tiny_cnn", "--limit", "400", "--epochs", "1", "--batch-size", "32",
                    "--wandb", "disabled", "--no-export", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 960x420 PNG with three faces (one mirrored, three sizes) that the Haar detector finds. The face is
    Grace Hopper's, from the US Navy portrait (public domain) that matplotlib ships as sample data."""
    from matplotlib import cbook

    hopper = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    x, y, size = 155, 105, 222  # her face, as the Haar detector boxes it
    margin = round(0.45 * size)
    head = hopper.crop((x - margin, y - margin, x + size + margin, y + size + margin))
    height, width = 420, 960
    rows, cols = np.mgrid[0:height, 0:width]
    background = np.stack([90 + 60 * cols / width, 120 + 40 * rows / height, np.full((height, width), 150.0)], -1)
    picture = Image.fromarray(background.astype(np.uint8))
    for left, side, mirror in [(20, 300, False), (340, 240, True), (640, 290, False)]:
        pasted = head.resize((side, side), Image.Resampling.LANCZOS)
        picture.paste(ImageOps.mirror(pasted) if mirror else pasted, (left, (height - side) // 2))
    path = tmp_path_factory.mktemp("photo") / "three_faces.png"
    picture.save(path)
    assert len(facelib.detect_faces(np.asarray(picture))) == N_FACES, "the detector must find every pasted face"
    return path


@pytest.fixture(scope="module")
def server(tiny_run):
    """The server on a free port of 127.0.0.1 (`--port 0`, the default host), upload limit 1 MB."""
    running = Server(["--model", str(tiny_run), "--port", "0", "--max-upload-mb", str(MAX_UPLOAD_MB)])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def expected(server, photo):
    """The API's answer for the photo (checked in test_api_multipart_and_raw_body)."""
    with open(photo, "rb") as file:
        response = requests.post(server.url + "api/predict", files={"file": ("three_faces.png", file, "image/png")},
                                 timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _need_browser():
    """Skip where Chromium or Playwright is missing, but fail in CI, whose .ci/run installs both."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright for Python (pip install -r requirements.txt)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium; FER_KERAS_CHROMIUM names another)")
    if missing:
        message = "the browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run installs them")
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory, photo):
    """Headless Chromium with a fresh profile, whose fake webcam shows the photo (a Y4M video file)."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    video = tmp_path_factory.mktemp("webcam") / "three_faces.y4m"
    _write_y4m(Image.open(photo), video)
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-video-capture={video}"]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"), executable_path=CHROMIUM, args=args, headless=True,
            viewport={"width": 1280, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def _write_y4m(image, path, frames=2):
    """`image` as an uncompressed Y4M video (4:2:0), the format Chromium's fake webcam plays from a file."""
    image = image.convert("RGB")
    image = image.crop((0, 0, image.width // 2 * 2, image.height // 2 * 2))
    y, cb, cr = image.convert("YCbCr").split()
    half = (image.width // 2, image.height // 2)
    planes = y.tobytes() + b"".join(c.resize(half, Image.Resampling.BOX).tobytes() for c in (cb, cr))
    with open(path, "wb") as file:
        file.write(f"YUV4MPEG2 W{image.width} H{image.height} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            file.write(b"FRAME\n" + planes)


# --- the page in a browser -------------------------------------------------------------------------


def _open_page(browser, url):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_function("document.querySelector('#model-info').textContent.startsWith('Model:')")
    return page, errors


def test_page_shows_boxes_bars_and_gradcam(browser, server, photo, expected, tmp_path):
    page, errors = _open_page(browser, server.url)
    assert "Grad-CAM of layer" in page.inner_text("#model-info")
    assert page.locator("#camera-start").is_visible() and page.locator("#camera-snap").is_hidden()
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=done]", timeout=60_000)
    assert page.inner_text("#status").startswith(f"{N_FACES} faces found in three_faces.png")

    # A box on the photo per face, where the API put it (the photo is shown scaled).
    picture = page.locator("#photo-img").bounding_box()
    scale = picture["width"] / expected["image"]["width"]
    boxes = page.locator(".face-box")
    assert boxes.count() == N_FACES
    for i, face in enumerate(expected["faces"]):
        drawn = boxes.nth(i).bounding_box()
        x, y, w, h = face["box"]
        assert drawn["x"] - picture["x"] == pytest.approx(x * scale, abs=1.5)
        assert drawn["y"] - picture["y"] == pytest.approx(y * scale, abs=1.5)
        assert drawn["width"] == pytest.approx(w * scale, abs=1.5)
        assert drawn["height"] == pytest.approx(h * scale, abs=1.5)
        label = re.fullmatch(r"(\d+) · (\w+) (\d+)%", boxes.nth(i).inner_text())
        assert label and label.group(1, 2) == (str(i + 1), face["emotion"])
        assert int(label.group(3)) == pytest.approx(100 * face["probabilities"][face["emotion"]], abs=0.51)

    # A card per face: seven bars as long as the probabilities, and the Grad-CAM overlay.
    cards = page.locator("#faces .face")
    assert cards.count() == N_FACES
    for i, face in enumerate(expected["faces"]):
        card = cards.nth(i)
        assert card.get_attribute("data-emotion") == face["emotion"]
        bars = card.locator(".bar")
        assert [bars.nth(k).get_attribute("data-class") for k in range(bars.count())] == list(CLASS_NAMES)
        for k, name in enumerate(CLASS_NAMES):
            track = bars.nth(k).locator(".track").bounding_box()["width"]
            fill = bars.nth(k).locator(".fill").bounding_box()
            length = fill["width"] if fill else 0.0
            assert length / track == pytest.approx(face["probabilities"][name], abs=0.01)
            assert float(bars.nth(k).get_attribute("aria-valuenow")) == pytest.approx(face["probabilities"][name])
        assert "top" in bars.nth(CLASS_NAMES.index(face["emotion"])).get_attribute("class")
        overlay = card.locator("img.gradcam")
        assert overlay.is_visible()
        caption = re.fullmatch(r"Grad-CAM: where the model looked for (\w+)", card.locator("figcaption").inner_text())
        assert caption and caption.group(1) in CLASS_NAMES
        assert overlay.evaluate("img => img.complete && img.naturalWidth") == serve.GRADCAM_SIZE
    assert page.locator("#gradcam-note").is_hidden()

    # The screenshot: each box's border is painted in its class colour where the box says it is.
    shot = Path(os.environ.get("FER_KERAS_SCREENSHOT") or tmp_path / "serve_page.png")  # env: keep it somewhere
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for i in range(N_FACES):
        drawn = boxes.nth(i).bounding_box()
        colour = boxes.nth(i).evaluate("el => getComputedStyle(el).borderLeftColor")
        want = [int(v) for v in re.findall(r"\d+", colour)[:3]]
        got = pixels[round(drawn["y"] + drawn["height"] / 2), round(drawn["x"] + 1.5)]
        assert np.abs(got - want).max() <= 40, (i, got, want)
    assert not errors
    page.close()


def test_page_says_why_an_upload_fails(browser, server, tmp_path):
    page, errors = _open_page(browser, server.url)
    text = tmp_path / "notes.png"  # named like an image, but it is not one
    text.write_text("not an image")
    page.set_input_files("#file", str(text))
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert "notes.png: not an image" in page.inner_text("#status")
    too_big = tmp_path / "huge.jpg"
    too_big.write_bytes(b"\xff" * (MAX_UPLOAD_MB * 1024 * 1024 + 1))
    page.set_input_files("#file", str(too_big))
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert page.inner_text("#status").startswith("huge.jpg is too large")
    assert not errors
    page.close()


def test_webcam_photo(browser, server):
    """getUserMedia with Chromium's fake camera playing the photo: "Take the photo" sends one frame."""
    page, errors = _open_page(browser, server.url)
    page.click("#camera-start")
    page.wait_for_selector("#camera-snap", state="visible", timeout=30_000)
    page.wait_for_function("document.querySelector('#camera').videoWidth > 0", timeout=30_000)
    page.click("#camera-snap")
    page.wait_for_selector("body[data-state=done]", timeout=60_000)
    assert page.inner_text("#status").startswith(f"{N_FACES} faces found in the webcam photo")
    assert page.locator(".face-box").count() == N_FACES
    page.click("#camera-stop")
    assert page.locator("#camera").is_hidden()
    assert not errors
    page.close()


# --- the JSON API ----------------------------------------------------------------------------------


def _post(server, **kwargs):
    return requests.post(server.url + "api/predict", timeout=60, **kwargs)


def _same_faces(a, b):
    assert [face["box"] for face in a["faces"]] == [face["box"] for face in b["faces"]]
    for x, y in zip(a["faces"], b["faces"], strict=True):
        assert x["emotion"] == y["emotion"]
        got, want = ([face["probabilities"][n] for n in CLASS_NAMES] for face in (x, y))
        assert got == pytest.approx(want, abs=1e-5)


def test_api_multipart_and_raw_body(server, photo, expected, tiny_run):
    """Multipart field `file` and the raw body give the same answer, which is `detect`'s."""
    from fer_keras import EmotionRecognizer

    assert expected["image"] == {"width": 960, "height": 420}
    assert len(expected["faces"]) == N_FACES
    for face in expected["faces"]:
        assert set(face) == {"box", "emotion", "probabilities"}
        assert list(face["probabilities"]) == list(CLASS_NAMES)
        assert sum(face["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert face["emotion"] == max(face["probabilities"], key=face["probabilities"].get)
    raw = _post(server, data=photo.read_bytes(), headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    _same_faces(raw.json(), expected)
    direct = {"faces": [face.to_dict() for face in EmotionRecognizer.load(tiny_run).detect(str(photo))]}
    _same_faces(direct, expected)

    with_cam = _post(server, params={"gradcam": "1"}, data=photo.read_bytes())
    assert with_cam.status_code == 200
    overlays = [face["gradcam"] for face in with_cam.json()["faces"]]
    assert len(overlays) == N_FACES and all(o.startswith("data:image/png;base64,") for o in overlays)
    for explained, face in zip(with_cam.json()["faces"], expected["faces"], strict=True):
        first, second = sorted(face["probabilities"].values())[-2:][::-1]
        if first - second > 1e-4:  # one model: Grad-CAM explains the class shown (unless two tie)
            assert explained["gradcam_class"] == face["emotion"]

    blank = io.BytesIO()
    Image.new("RGB", (320, 240), "grey").save(blank, format="JPEG")
    nobody = _post(server, params={"gradcam": "1"}, data=blank.getvalue())
    assert nobody.status_code == 200 and nobody.json() == {"faces": [], "image": {"width": 320, "height": 240}}


def test_api_info_and_not_found(server):
    info = requests.get(server.url + "api/info", timeout=10).json()
    assert info["classes"] == list(CLASS_NAMES)
    assert info["gradcam"] is True
    assert info["max_upload_bytes"] == MAX_UPLOAD_MB * 1024 * 1024
    missing = requests.get(server.url + "api/nothing", timeout=10)
    assert missing.status_code == 404 and missing.json() == {"error": "not found"}
    wrong = requests.get(server.url + "api/predict", timeout=10)
    assert wrong.status_code == 405 and "error" in wrong.json()
    assert requests.get(server.url + "static/app.js", timeout=10).status_code == 200


def test_api_refuses_bad_uploads_and_keeps_serving(server, photo, expected):
    limit = MAX_UPLOAD_MB * 1024 * 1024
    cases = {
        "not an image": (_post(server, files={"file": ("photo.jpg", b"GIF89a but no more", "image/jpeg")}), 415),
        "raw text": (_post(server, data=b"hello", headers={"Content-Type": "text/plain"}), 415),
        "empty body": (_post(server, data=b""), 400),
        "no file field": (_post(server, files={"picture": ("p.png", photo.read_bytes(), "image/png")}), 400),
        "over the limit": (_post(server, data=b"\0" * (limit + 1)), 413),
        "multipart over the limit": (_post(server, files={"file": ("big.png", b"\0" * limit, "image/png")}), 413),
        # chunked, no Content-Length: counted as it arrives
        "chunked over the limit": (_post(server, data=iter([b"\0" * 65536] * (limit // 65536 + 2))), 413),
    }
    for name, (response, status) in cases.items():
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == "application/json", name
        assert response.json()["error"], name
    assert "over the limit of 1,048,576 bytes" in cases["over the limit"][0].json()["error"]
    with open(photo, "rb") as file:
        again = _post(server, files={"file": file})
    assert again.status_code == 200
    _same_faces(again.json(), expected)
    assert server.process.poll() is None


def test_api_pixel_limit(server):
    """A small file that decodes to a huge image (a decompression bomb) is refused before decoding."""
    buffer = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buffer, format="PNG")  # 48 megapixels in ~50 kB
    response = _post(server, data=buffer.getvalue())
    assert response.status_code == 413
    assert "8000x6000 pixels" in response.json()["error"]


def test_concurrent_requests_share_one_model(server, photo, expected):
    data = photo.read_bytes()

    def one(i):
        if i % 2:
            return _post(server, data=data)
        return _post(server, files={"file": ("three_faces.png", data, "image/png")}, params={"gradcam": str(i % 4)})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(one, range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    for response in responses:
        _same_faces(response.json(), expected)
    assert server.output().count("model loaded") == 1
    assert server.process.poll() is None


# --- the command and the pieces ------------------------------------------------------------------


def test_command_errors_are_one_line(capsys, free_ports):
    with pytest.raises(SystemExit) as stopped:
        serve.main(["--port", "70000"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: --port must be 0-65535")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            serve.main(["--port", str(port)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}") and err.count("\n") == 1

    with pytest.raises(SystemExit) as stopped:
        serve.main(["--model", "no/such/model.keras", "--port", str(free_ports(1)[0])])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no/such/model.keras") and "Traceback" not in err


def test_page_without_gradcam(browser, tmp_path, photo):
    """A model without convolutions (an MLP) is served without Grad-CAM, and the page says why."""
    import uvicorn

    from fer_keras import EmotionRecognizer
    from fer_keras.models import build_model

    path = tmp_path / "mlp.keras"
    build_model("mlp").save(path)
    engine = serve.Engine(EmotionRecognizer.load(path), "an MLP")
    assert engine.explainer is None and "no convolutional layer" in engine.gradcam_note
    answer = engine.predict(photo.read_bytes(), gradcam=True)
    assert len(answer["faces"]) == N_FACES and all("gradcam" not in face for face in answer["faces"])

    sock = serve.listen("127.0.0.1", 0)
    app = serve.create_app(engine, 1024 * 1024)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        page, errors = _open_page(browser, f"http://127.0.0.1:{sock.getsockname()[1]}/")
        assert "no Grad-CAM" in page.inner_text("#model-info")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state=done]", timeout=60_000)
        assert page.locator(".face-box").count() == N_FACES
        assert page.locator("img.gradcam:visible").count() == 0
        assert "no convolutional layer" in page.inner_text("#gradcam-note")
        assert not errors
        page.close()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_no_gradcam_without_keras_model():
    """Predictors without a Keras model behind them (a SavedModel, a TFLite file) give no Grad-CAM."""

    from fer_keras.inference.predictor import Predictor

    class Recognizer:
        predictor = Predictor(lambda x: np.full((len(x), 7), 1 / 7, np.float32))

    explainer, note = serve._explainer(Recognizer())
    assert explainer is None and "SavedModel or TFLite" in note
