"""Property-based fuzzing (Hypothesis) of the CSV reader, the data CLI and image reading: input of any
shape gives data or a one-line `FerError`, never a traceback, and the valid rows are still read."""

import contextlib
import gzip
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fer_keras.inference import faces
from fer_keras.constants import NUM_PIXELS
from fer_keras.data import FERData, reader
from fer_keras.data.__main__ import main
from fer_keras.data.ferdata import USAGES
from fer_keras.errors import FerError

# No example database: the failures found so far are kept as @examples and plain tests.
FUZZ = settings(max_examples=80, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

# Header -> the field each column holds: the layouts of fer_keras.data.layout.
LAYOUTS = {
    "emotion,pixels,Usage": ("emotion", "pixels", "usage"),
    "emotion,pixels": ("emotion", "pixels"),
    "pixels": ("pixels",),
    "id,pixels": ("id", "pixels"),
    "emotion, Usage, pixels": ("emotion", "usage", "pixels"),
}
HEADERS = [h.encode() for h in LAYOUTS]


@contextlib.contextmanager
def scratch(block_bytes=None):
    """A fresh folder, also the decode cache, for one example; optionally smaller read blocks."""
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(mock.patch.dict(os.environ, {"FER_KERAS_CACHE": str(folder / "cache")}))
        if block_bytes:
            stack.enter_context(mock.patch.object(reader, "BLOCK_BYTES", block_bytes))
        yield folder


def integer(text):
    """The reader's contract for an integer field: an optional '-' and ASCII digits, any number of them.
    Returns its value (10**9 stands for any value of 10+ digits), or None for anything else."""
    if not re.fullmatch(rb"-?[0-9]+", text):
        return None
    digits = text.lstrip(b"-").lstrip(b"0") or b"0"
    value = int(digits) if len(digits) < 10 else 10**9
    return -value if text.startswith(b"-") else value


def in_range(text, top):
    """Whether `text` is an integer field (see `integer`) of value 0..top."""
    value = integer(text)
    return value is not None and 0 <= value <= top


def read(path, skip_bad):
    """`load_fer2013(path, skip_bad)`, or the `FerError` it raised (checked to be one line naming the file);
    any other exception fails the test."""
    try:
        return reader.load_fer2013(path, skip_bad=skip_bad)
    except FerError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and len(message.splitlines()) == 1, message
        return exc


def summary(outcome):
    """Everything a read gave, comparable with ==."""
    if isinstance(outcome, FerError):
        return str(outcome)
    arrays = (outcome.images, outcome.labels, outcome.usage, outcome.lines)
    return [None if a is None else (a.dtype.kind, a.shape, a.tobytes()) for a in arrays], outcome.problems


# --- (a) random bytes -------------------------------------------------------------------------------

# Headers of real and odd column names (any unicode, control characters, quotes, blanks).
ODD_NAMES = st.one_of(st.sampled_from(["emotion", "pixels", "Usage", "id", ' "Pixels" ', ""]), st.text(max_size=6))
ODD_HEADERS = st.lists(ODD_NAMES, min_size=1, max_size=4).map(lambda names: ",".join(names).encode())
RANDOM_BYTES = st.one_of(
    st.binary(max_size=2000),
    st.builds(lambda header, nl, rest: header + nl + rest, st.one_of(st.sampled_from(HEADERS), ODD_HEADERS),
              st.sampled_from([b"\n", b"\r\n"]), st.binary(max_size=2000)),
)


@st.composite
def gzip_of(draw, content):
    """`(damage, bytes)`: `content` gzipped as it is, cut short, with a byte changed or with bytes after its end."""
    packed = gzip.compress(content, mtime=0)
    damage = draw(st.sampled_from(["none", "cut", "flip", "trailing"]))
    if damage == "cut":
        return damage, packed[:draw(st.integers(0, len(packed) - 1))]
    if damage == "flip":
        at = draw(st.integers(0, len(packed) - 1))
        return damage, packed[:at] + bytes([packed[at] ^ draw(st.integers(1, 255))]) + packed[at + 1:]
    if damage == "trailing":
        return damage, packed + draw(st.binary(min_size=1, max_size=40))
    return damage, packed


# Regressions: a pixel and a label of 4301+ digits were ValueError tracebacks (int() refuses them); a control
# character in the header made a "wrong field count" message two lines.
HUGE_PIXEL = b"emotion,pixels\n1," + b"9" * 5000 + b" 2\n"
HUGE_LABEL = b"emotion,pixels\n" + b"1" * 5000 + b",1 2\n"
CONTROL_IN_HEADER = b"pixels,a\x1cb\n1 2\n"


@FUZZ
@given(st.one_of(RANDOM_BYTES, RANDOM_BYTES.flatmap(gzip_of).map(lambda damaged: damaged[1])), st.booleans())
@example(HUGE_PIXEL, False)
@example(HUGE_LABEL, True)
@example(CONTROL_IN_HEADER, False)
def test_random_bytes_give_data_or_fer_error(content, skip_bad):
    """Any bytes, plain or gzipped (whole, cut, changed), read as data or a one-line `FerError`, and the
    same again from the cache."""
    with scratch() as folder:
        path = folder / "in.csv"
        path.write_bytes(content)
        fresh = read(path, skip_bad)
        assert summary(read(path, skip_bad)) == summary(fresh)


# --- (b, c) files of valid and random rows, random fields and tokens ----------------------------------

# Field text: no comma, quote or newline (those make other fields, see JUNK_ROWS), no ASCII whitespace
# inside (what separates pixel tokens is drawn on its own).
FIELD_TEXT = st.text(st.characters(exclude_characters=',"\n\r\t\x0b\x0c ', codec="utf-8"), max_size=8).map(str.encode)
DIGIT_RUNS = st.builds(lambda digit, n: digit * n, st.sampled_from([b"0", b"1", b"9"]), st.integers(4, 6000))
PIXEL_TOKENS = st.one_of(
    st.integers(0, 255).map(b"%d".__mod__),
    st.builds(lambda zeros, v: b"0" * zeros + b"%d" % v, st.integers(1, 4), st.integers(0, 255)),
    st.integers(-10**30, 10**30).map(b"%d".__mod__),
    DIGIT_RUNS,
    st.builds(lambda run, v: run + b"%d" % v, DIGIT_RUNS, st.integers(0, 9)),
    st.sampled_from([b"+5", b"-0", b"-", b"1.5", b"2e2", b"0x1f", b"1_0", b"nan", b"\xd9\xa3", b"\xef\xbc\x91"]),
    FIELD_TEXT.filter(bool),
)
SEPARATORS = st.sampled_from([b" ", b"  ", b"\t", b" \t ", b""])
LABELS = st.one_of(st.integers(0, 6).map(b"%d".__mod__), PIXEL_TOKENS,
                   st.sampled_from([b" 3 ", b"\t6", b"", b"happy", b"+3"]))
USAGE_TEXT = st.one_of(st.sampled_from(USAGES).map(str.encode), FIELD_TEXT,
                       st.sampled_from([b"training", b"Test", b"", b" Training ", b"PublicTest\t"]))


@st.composite
def pixel_fields(draw):
    """`(text, pixels or None)`: a face's 2304 tokens, maybe fewer or more, some replaced by random
    tokens, some separators odd (an empty one joins two tokens)."""
    values = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, NUM_PIXELS + 3)
    tokens = [b"%d" % v for v in values[:draw(st.one_of(st.just(NUM_PIXELS), st.integers(0, NUM_PIXELS + 3)))]]
    separators = [b" "] * (len(tokens) - 1)
    for at, token in draw(st.lists(st.tuples(st.integers(0, NUM_PIXELS + 2), PIXEL_TOKENS), max_size=3)):
        if tokens:
            tokens[at % len(tokens)] = token
    for at, separator in draw(st.lists(st.tuples(st.integers(0, NUM_PIXELS + 2), SEPARATORS), max_size=3)):
        if separators:
            separators[at % len(separators)] = separator
    text = draw(st.sampled_from([b"", b" ", b"\t"])) + b"".join(s + t for s, t in zip([b""] + separators, tokens))
    read_tokens = text.split()
    good = len(read_tokens) == NUM_PIXELS and all(in_range(t, 255) for t in read_tokens)
    return text, np.array([integer(t) for t in read_tokens], np.uint8) if good else None


@dataclass
class Row:
    """One line (without its newline) and what reading it must give: `good` (pixels, label, Usage) for a
    valid row, nothing for a row that must be in `.problems`, `blank` (set with its line end) for no row."""

    text: bytes
    good: tuple | None = None
    blank: bool = False


@st.composite
def field_rows(draw, columns):
    """A row of random or valid fields, quoted or padded; it is good when every field is."""
    fields, pixels, label, usage, good = [], None, None, None, True
    for column in columns:
        if column == "pixels":
            text, pixels = draw(pixel_fields())
            good &= pixels is not None
        elif column == "emotion":
            text = draw(LABELS)
            good &= in_range(text.strip(), 6)
            label = integer(text.strip())
        elif column == "usage":
            text = draw(USAGE_TEXT)
            usage = text.strip().decode("utf-8", "replace")
            good &= usage in USAGES
        else:
            text = draw(FIELD_TEXT)
        fields.append(text)
    style = draw(st.sampled_from(["plain", "quoted", "spaced"]))
    if style == "quoted":
        fields = [b'"' + f + b'"' for f in fields]
    text = (b", " if style == "spaced" else b",").join(fields)
    return Row(text, (pixels, label, usage) if good else None)


@st.composite
def valid_rows(draw, columns):
    """A plainly written valid row."""
    pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 256, NUM_PIXELS).astype(np.uint8)
    label, usage = draw(st.integers(0, 6)), draw(st.sampled_from(USAGES))
    field = {"pixels": b" ".join(b"%d" % v for v in pixels.tolist()), "emotion": b"%d" % label,
             "usage": usage.encode(), "id": b"7"}
    return Row(b",".join(field[c] for c in columns), (pixels, label, usage))


# Short random lines (too short for 2304 pixels, so never valid): random field counts, quotes, CRs, BOMs.
JUNK_ROWS = st.one_of(
    st.binary(max_size=60),
    st.lists(st.sampled_from(list('0123456789 ,"\r\t-+.\ufeffé€') + ["Training"]), max_size=30)
    .map(lambda parts: "".join(parts).encode()),
).filter(lambda b: b"\n" not in b).map(Row)


@st.composite
def reshaped_rows(draw, columns):
    """A valid row with a field too many or too few."""
    row = draw(valid_rows(columns))
    if draw(st.booleans()) or len(columns) == 1:
        return Row(row.text + b"," + draw(FIELD_TEXT))
    return Row(row.text.rsplit(b",", 1)[0] if columns[-1] != "pixels" else row.text.split(b",", 1)[1])


@st.composite
def csv_files(draw):
    """`(bytes, columns, rows)`: a header of any layout and a few rows of every kind, odd line ends."""
    header = draw(st.sampled_from(sorted(LAYOUTS)))
    columns = LAYOUTS[header]
    rows = draw(st.lists(st.one_of(valid_rows(columns), field_rows(columns), JUNK_ROWS, reshaped_rows(columns),
                                   st.sampled_from([b"", b"\r"]).map(Row)), max_size=6))
    header = draw(st.sampled_from([header, header.upper(), ",".join(f'"{c}"' for c in header.split(","))]))
    lines = [draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + header.encode()] + [row.text for row in rows]
    ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
    ends[-1] = draw(st.sampled_from([b"\n", b"\r\n", b""])) if rows else ends[-1]
    for row, end in zip(rows, ends[1:]):  # a line is blank when nothing is left once its LF and one CR go
        row.blank = (row.text + end).removesuffix(b"\n").removesuffix(b"\r") == b""
    return b"".join(line + end for line, end in zip(lines, ends)), columns, rows


def check(outcome, path, columns, rows, skip_bad):
    """`outcome` of reading the file of `rows` is what the reader's contract says."""
    good = [(line, *row.good) for line, row in enumerate(rows, 2) if row.good is not None]
    bad = [line for line, row in enumerate(rows, 2) if row.good is None and not row.blank]
    if not good and not bad:
        assert isinstance(outcome, FerError) and "line 2: no data rows after the header" in str(outcome)
    elif bad and not skip_bad:
        assert isinstance(outcome, FerError) and str(outcome).startswith(f"{path}: line {bad[0]}: ")
    elif not good:
        assert isinstance(outcome, FerError) and "no valid rows" in str(outcome)
    else:
        assert isinstance(outcome, FERData), outcome
        lines, pixels, labels, usage = zip(*good)
        assert outcome.lines.tolist() == list(lines)
        assert [p.line for p in outcome.problems] == bad
        np.testing.assert_array_equal(outcome.images.reshape(-1, NUM_PIXELS), pixels)
        assert (outcome.labels is None) == ("emotion" not in columns)
        assert outcome.labels is None or outcome.labels.tolist() == list(labels)
        assert (outcome.usage is None) == ("usage" not in columns)
        assert outcome.usage is None or outcome.usage.tolist() == list(usage)


def test_thousands_of_leading_zeros_are_still_a_valid_value():
    """A label and a pixel of 5000 digits (too long for int()) that are in range once the zeros go are read."""
    pixels = " ".join(["0" * 5000 + "7"] + ["1"] * (NUM_PIXELS - 1))
    with scratch() as folder:
        path = folder / "zeros.csv"
        path.write_bytes(f"emotion,pixels\n{'0' * 5000}3,{pixels}\n".encode())
        data = reader.load_fer2013(path)
    assert data.labels.tolist() == [3] and data.images.ravel()[:3].tolist() == [7, 1, 1]


@FUZZ
@given(csv_files(), st.booleans(), st.booleans(), st.sampled_from([None, 4096, 97]))
def test_valid_rows_are_read_and_bad_rows_reported(file, gzipped, skip_bad, block_bytes):
    """Each valid row comes back exactly, at its file line; each bad one is in `.problems` or the error;
    from a fresh read and from the cache, with and without skip_bad."""
    content, columns, rows = file
    with scratch(block_bytes) as folder:
        path = folder / "in.csv"
        path.write_bytes(gzip.compress(content, mtime=0) if gzipped else content)
        fresh = read(path, skip_bad)
        check(fresh, path, columns, rows, skip_bad)
        check(read(path, not skip_bad), path, columns, rows, not skip_bad)
        assert summary(read(path, skip_bad)) == summary(fresh)  # cached read == fresh read, problems too


@FUZZ
@given(csv_files().flatmap(lambda file: gzip_of(file[0])))
def test_damaged_gzip_reads_as_data_or_fer_error(damaged):
    """A gzipped file cut short is a `FerError`; one with a byte changed or bytes after its end, data or one."""
    damage, content = damaged
    with scratch(4096) as folder:
        path = folder / "in.csv.gz"
        path.write_bytes(content)
        outcome = read(path, skip_bad=True)
        assert damage != "cut" or isinstance(outcome, FerError)


# --- the CLI -----------------------------------------------------------------------------------------

def run_stats(path, folder, skip_bad):
    """`python -m fer_keras.data stats` in-process: (exit status, stderr lines)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main(["stats", str(path), "--out", str(folder / "charts")] + ["--skip-bad"] * skip_bad)
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue().splitlines()


@settings(FUZZ, max_examples=50)
@given(st.one_of(csv_files().map(lambda file: file[0]), RANDOM_BYTES), st.booleans())
@example(HUGE_PIXEL, False)
@example(CONTROL_IN_HEADER, True)
def test_cli_exits_0_or_2_with_one_error_line(content, skip_bad):
    """`stats` on any file exits 0 (at most one `warning:` line) or 2 with exactly one `error:` line naming it."""
    with scratch() as folder:
        path = folder / "in.csv"
        path.write_bytes(content)
        code, err = run_stats(path, folder, skip_bad)
        if code == 2:
            assert len(err) == 1 and err[0].startswith(f"error: {path}: "), err
        else:
            assert code == 0 and len(err) <= 1 and all(line.startswith(f"warning: {path}: ") for line in err), err


# --- image files for predict -------------------------------------------------------------------------

def _image_bytes(fmt, mode, **save):
    """A 16x12 random image of `mode` saved as `fmt`."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (12, 16, 3), np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


_ORIENTED = Image.Exif()
_ORIENTED[0x0112] = 6  # EXIF orientation: rotated 90 degrees
IMAGES = [_image_bytes(*spec) for spec in [("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"), ("GIF", "P"),
                                           ("BMP", "RGB"), ("TIFF", "RGB"), ("TIFF", "F"), ("WEBP", "RGBA"),
                                           ("PPM", "RGB"), ("JPEG", "CMYK"), ("ICO", "RGBA")]]
IMAGES.append(_image_bytes("JPEG", "RGB", exif=_ORIENTED))


@st.composite
def damaged_images(draw):
    """A small image file of some format, cut short, with bytes changed, or random bytes after its magic."""
    content = draw(st.sampled_from(IMAGES))
    damage = draw(st.sampled_from(["cut", "change", "random"]))
    if damage == "cut":
        return content[:draw(st.integers(0, len(content) - 1))]
    if damage == "random":
        return content[:draw(st.integers(0, 16))] + draw(st.binary(max_size=300))
    changed = bytearray(content)
    for at, value in draw(st.lists(st.tuples(st.integers(0, len(content) - 1), st.integers(0, 255)),
                                   min_size=1, max_size=4)):
        changed[at] = value
    return bytes(changed)


def test_undamaged_images_read_as_gray():
    """The images the fuzzing starts from read fine (the EXIF-rotated JPEG comes back upright, 16 high)."""
    with tempfile.TemporaryDirectory() as folder:
        for n, content in enumerate(IMAGES):
            path = Path(folder) / f"{n}.img"
            path.write_bytes(content)
            gray = faces.read_gray(path)
            assert gray.dtype == np.uint8 and gray.shape == ((16, 12) if content is IMAGES[-1] else (12, 16)), n


def test_tiff_with_float_strip_offsets_is_a_fer_error(tmp_path):
    """Regression: Pillow raised TypeError ('float' object cannot be interpreted as an integer) through read_gray."""
    tiff = _image_bytes("TIFF", "RGB")
    damaged = tiff.replace(b"\x11\x01\x04\x00", b"\x11\x01\x0b\x00")  # StripOffsets (tag 273): LONG -> FLOAT
    assert damaged != tiff
    path = tmp_path / "face.tif"
    path.write_bytes(damaged)
    with pytest.raises(FerError, match=re.escape(f"{path}: cannot read image: ")):
        faces.read_gray(path)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
@settings(FUZZ, max_examples=100)
@given(st.one_of(damaged_images(), st.binary(max_size=400)))
def test_damaged_image_is_a_fer_error_naming_the_file(content):
    """`read_gray` of any bytes gives a uint8 grayscale array or a `FerError` naming the file.
    Pillow's decompression-bomb limit is lowered so a changed size field cannot take gigabytes."""
    with tempfile.TemporaryDirectory() as folder, mock.patch.object(Image, "MAX_IMAGE_PIXELS", 1 << 20):
        path = Path(folder) / "face.png"
        path.write_bytes(content)
        try:
            gray = faces.read_gray(path)
        except FerError as exc:
            assert str(exc).startswith(f"{path}: cannot read image: ")
        else:
            assert gray.dtype == np.uint8 and gray.ndim == 2
