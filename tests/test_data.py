"""Reading every FER2013 layout, bad input, the decode cache, splits, stats and the data CLI."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from fer_keras.constants import NUM_PIXELS
from fer_keras.data import DataError, FERData, load_fer2013, split_data
from fer_keras.data import reader
from fer_keras.data.__main__ import main
from fer_keras.data.csvfile import write_csv
from fer_keras.data.stats import conflicting_rows, dataset_stats
from fer_keras.core.paths import cache_dir

FER2013_TRAINING_COUNTS = [3995, 436, 4097, 7215, 4830, 3171, 4965]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """A decode cache per test, so one test's entries never answer another's."""
    monkeypatch.setenv("FER_KERAS_CACHE", str(tmp_path / "cache"))


def faces(n, seed=0):
    """`n` random uint8 faces (N, 48, 48, 1), distinct with overwhelming probability."""
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)


def pixel_text(image):
    return " ".join(map(str, image.ravel().tolist()))


def write(path, lines, newline="\n"):
    """Write text lines to `path`, gzipped when it ends in .gz (stdlib gzip, not the code under test)."""
    data = (newline.join(lines) + newline).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def fer_lines(images, labels, usage, header="emotion,pixels,Usage"):
    return [header] + [f"{lab},{pixel_text(im)},{use}" for im, lab, use in zip(images, labels, usage)]


@pytest.fixture
def small():
    """Six faces with labels and Usage values."""
    return faces(6), np.array([0, 1, 2, 3, 4, 6]), np.array(["Training"] * 4 + ["PublicTest", "PrivateTest"])


def _layout_lines(layout, images, labels, usage):
    pix = [pixel_text(im) for im in images]
    if layout == "fer2013":
        return fer_lines(images, labels, usage)
    if layout == "train":
        return ["emotion,pixels"] + [f"{lab},{p}" for lab, p in zip(labels, pix)]
    if layout == "test":
        return ["pixels"] + pix
    if layout == "test_id":
        return ["id,pixels"] + [f"{i},{p}" for i, p in enumerate(pix)]
    sep = ", " if layout == "icml_spaced" else ","
    return ["emotion, Usage, pixels"] + [sep.join((str(lab), use, p)) for lab, use, p in zip(labels, usage, pix)]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
@pytest.mark.parametrize("layout", ["fer2013", "train", "test", "test_id", "icml", "icml_spaced"])
def test_reads_every_layout(tmp_path, small, layout, suffix):
    images, labels, usage = small
    data = load_fer2013(write(tmp_path / f"{layout}{suffix}", _layout_lines(layout, images, labels, usage)))
    assert isinstance(data, FERData)
    assert data.images.dtype == np.uint8 and data.images.shape == (6, 48, 48, 1)
    np.testing.assert_array_equal(data.images, images)
    if layout in ("test", "test_id"):
        assert data.labels is None
    else:
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.labels, labels)
    if layout in ("fer2013", "icml", "icml_spaced"):
        np.testing.assert_array_equal(data.usage, usage)
    else:
        assert data.usage is None
    assert data.skipped == {} and data.problems == [] and len(data) == 6
    np.testing.assert_array_equal(data.lines, np.arange(2, 8))


def test_crlf_quotes_blank_lines_and_missing_final_newline(tmp_path, small):
    images, labels, usage = small
    lines = fer_lines(images, labels, usage)
    lines[2] = lines[2].replace(",", ',"', 1).replace(",Training", '",Training')  # quoted pixel field
    lines.insert(3, "")
    path = tmp_path / "crlf.csv"
    path.write_bytes(("\r\n".join(lines)).encode())
    data = load_fer2013(path)
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    np.testing.assert_array_equal(data.lines, [2, 3, 5, 6, 7, 8])  # the blank line 4 is no row


def test_odd_but_valid_pixel_text_is_read_exactly(tmp_path):
    """Tabs, repeated spaces, leading zeros: the fast path hands these to the exact reader."""
    image = faces(1)[0]
    tokens = [str(v) for v in image.ravel()]
    tokens[0], tokens[1] = "0" + tokens[0], "00" + tokens[1]
    text = " ".join(tokens[:5]) + "\t" + "  ".join(tokens[5:])
    data = load_fer2013(write(tmp_path / "odd.csv", ["emotion,pixels", f"3,{text}"]))
    np.testing.assert_array_equal(data.images[0], image)


def test_long_file_spans_many_blocks(tmp_path, monkeypatch):
    """Rows cut across block boundaries and parsed on several threads come back in order."""
    monkeypatch.setattr(reader, "BLOCK_BYTES", 20_000)
    images, labels = faces(40), np.arange(40) % 7
    data = load_fer2013(write(tmp_path / "long.csv.gz", fer_lines(images, labels, ["Training"] * 40)))
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)


def _bad_row(images, row_text):
    good = [f"0,{pixel_text(im)},Training" for im in images]
    return ["emotion,pixels,Usage", good[0], row_text, good[1]]


BAD_ROWS = {
    "wrong pixel count": (lambda p: f"2,{p.rsplit(' ', 1)[0]},Training", "2303 pixel values, expected 2304"),
    "non-integer token": (lambda p: f"2,{p.replace(' ', ' 12a ', 1)},Training", "'12a', not an integer"),
    "float token": (lambda p: f"2,7.5 {p.split(' ', 1)[1]},Training", "'7.5', not an integer"),
    "value over 255": (lambda p: f"2,300 {p.split(' ', 1)[1]},Training", "pixel 1 is 300, outside 0-255"),
    "four digits": (lambda p: f"2,{p.rsplit(' ', 1)[0]} 1234,Training", "pixel 2304 is 1234, outside 0-255"),
    "negative value": (lambda p: f"2,-5 {p.split(' ', 1)[1]},Training", "pixel 1 is -5, outside 0-255"),
    "thousands of digits": (lambda p: f"2,{'9' * 5000} {p.split(' ', 1)[1]},Training",  # int() refuses 4301+
                            "pixel 1 is 99999999... (5000 digits), outside 0-255"),
    "label outside 0-6": (lambda p: f"7,{p},Training", "label 7 is outside 0-6"),
    "label of thousands of digits": (lambda p: f"{'1' * 5000},{p},Training", "label 11111111... (5000 digits) is"),
    "label not an integer": (lambda p: f"happy,{p},Training", "label 'happy' is not an integer"),
    "wrong field count": (lambda p: f"2,{p}", "2 fields, expected 3"),
    "unknown Usage": (lambda p: f"2,{p},Validation", "Usage 'Validation' is not one of"),
}


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_line_and_problem(tmp_path, case, suffix):
    make_row, expected = BAD_ROWS[case]
    images = faces(3)
    path = write(tmp_path / f"bad{suffix}", _bad_row(images, make_row(pixel_text(images[2]))))
    with pytest.raises(DataError) as err:
        load_fer2013(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 3: ") and expected in message and "\n" not in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "file is empty"),
        (b"emotion,Usage\n0,Training\n", "line 1: missing column 'pixels'"),
        (b"emotion,pixels,Usage\n", "line 2: no data rows"),
        (b"emotion,pixels,pixels\n", "line 1: column 'pixels' appears twice"),
    ],
)
def test_bad_files(tmp_path, content, expected):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as err:
        load_fer2013(path)
    assert str(path) in str(err.value)


def test_truncated_gzip(tmp_path):
    images = faces(30)
    full = gzip.compress("\n".join(fer_lines(images, np.zeros(30, int), ["Training"] * 30)).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"cut\.csv\.gz: line \d+: gzip data is truncated") as err:
        load_fer2013(path)
    assert int(str(err.value).split("line ")[1].split(":")[0]) >= 2


def test_skip_bad_drops_counts_and_warns(tmp_path, capsys):
    images = faces(6)
    lines = fer_lines(images, [1] * 6, ["Training"] * 6)
    lines[2] = lines[2].replace("1,", "9,", 1)
    lines[4] = lines[4].replace(" ", " 300 ", 1)
    lines[5] = lines[5].replace(" ", " x ", 1)
    path = write(tmp_path / "some_bad.csv", lines)
    with pytest.raises(DataError, match=r"line 3: label 9 is outside 0-6 \(3 bad rows in all; skip_bad=True"):
        load_fer2013(path)
    data = load_fer2013(path, skip_bad=True)
    assert data.skipped == {"label outside 0-6": 1, "pixel outside 0-255": 1, "non-integer pixel": 1}
    np.testing.assert_array_equal(data.images, images[[0, 2, 5]])
    np.testing.assert_array_equal(data.lines, [2, 4, 7])
    assert [p[:2] for p in data.problems] == [(3, "label outside 0-6"), (5, "pixel outside 0-255"),
                                              (6, "non-integer pixel")]
    assert data.problems[1].detail == "pixel 2 is 300, outside 0-255"
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning.startswith(f"warning: {path}: skipped 3 bad rows") and "first: line 3:" in warning


def test_lines_and_problems_across_blocks_survive_cache_and_subset(tmp_path, monkeypatch):
    """File lines stay right across block boundaries and blank lines, from a fresh read and from the cache."""
    monkeypatch.setattr(reader, "BLOCK_BYTES", 20_000)
    images = faces(40)
    lines = fer_lines(images, np.arange(40) % 7, ["Training"] * 40)
    lines[10] = lines[10].replace(" ", " 256 ", 1)  # file line 11
    lines[33] = lines[33].replace(",Training", ",Test")  # line 35 once the blank line is in
    lines.insert(20, "")  # file line 21: blank, so data rows 19 on move down a line
    path = write(tmp_path / "blocks.csv.gz", lines)
    good = np.setdiff1d(np.arange(40), [9, 32])
    expected_lines = np.where(good < 19, good + 2, good + 3)
    expected_problems = [(11, "pixel outside 0-255", "pixel 2 is 256, outside 0-255"),
                         (35, "unknown Usage", "Usage 'Test' is not one of Training, PublicTest, PrivateTest")]
    fresh = load_fer2013(path, skip_bad=True)
    entry = cache_dir() / "decoded" / f"{reader.cache.file_key(path)}.images.npy"
    np.save(entry, np.zeros_like(fresh.images))  # doctor the entry: the next load must come from the cache
    cached = load_fer2013(path, skip_bad=True)
    assert cached.images.max() == 0
    for data in (fresh, cached):
        np.testing.assert_array_equal(data.lines, expected_lines)
        assert data.problems == expected_problems
        assert data.skipped == {"pixel outside 0-255": 1, "unknown Usage": 1}
    np.testing.assert_array_equal(fresh.images, images[good])
    part = cached.subset(np.array([0, 30, 37]))
    np.testing.assert_array_equal(part.lines, expected_lines[[0, 30, 37]])
    assert part.problems == expected_problems


def test_skip_bad_with_no_good_row_is_an_error(tmp_path):
    path = write(tmp_path / "all_bad.csv", ["emotion,pixels", "1,1 2 3"])
    with pytest.raises(DataError, match="no valid rows"):
        load_fer2013(path, skip_bad=True)


def test_cache_hit_and_changed_file_reread(tmp_path, small):
    images, labels, usage = small
    path = write(tmp_path / "cached.csv", fer_lines(images, labels, usage))
    load_fer2013(path)
    entry = cache_dir() / "decoded" / f"{reader.cache.file_key(path)}.images.npy"
    assert entry.exists()
    np.save(entry, np.zeros_like(images))  # doctor the entry: a cache hit must return it
    assert load_fer2013(path).images.max() == 0

    stat = path.stat()
    write(path, fer_lines(images[::-1], labels, usage))  # same size ...
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # ... and mtime, new content
    assert path.stat().st_size == stat.st_size
    np.testing.assert_array_equal(load_fer2013(path).images, images[::-1])


def test_cached_bad_rows_still_raise_or_skip(tmp_path):
    images = faces(3)
    lines = fer_lines(images, [0, 8, 0], ["Training"] * 3)
    path = write(tmp_path / "bad_cached.csv", lines)
    assert load_fer2013(path, skip_bad=True).skipped == {"label outside 0-6": 1}
    with pytest.raises(DataError, match="line 3: label 8"):
        load_fer2013(path)  # served from the cache, still an error
    assert len(load_fer2013(path, skip_bad=True)) == 2


def test_progress_bar_only_for_large_files(tmp_path, monkeypatch, capsys, small):
    images, labels, usage = small
    path = write(tmp_path / "bar.csv", fer_lines(images, labels, usage))
    load_fer2013(path)
    assert "reading" not in capsys.readouterr().err
    monkeypatch.setattr(reader, "PROGRESS_MIN_BYTES", 1)
    path = write(tmp_path / "bar2.csv", fer_lines(images[::-1], labels, usage))
    load_fer2013(path)
    assert "reading bar2.csv: 100%" in capsys.readouterr().err
    load_fer2013(path)  # cache hit: no bar
    assert "reading" not in capsys.readouterr().err


def labelled(n, usage=None, seed=0):
    labels = np.random.default_rng(seed).integers(0, 7, n)
    return FERData(faces(n, seed), labels, usage, "mem.csv")


def _row_keys(split):
    return {im.tobytes() for im in split.images}


@pytest.mark.parametrize("val_fraction", [0.1, 0.2])
def test_stratified_split(val_fraction):
    data = labelled(700)
    splits = split_data(data, val_fraction=val_fraction, seed=3)
    assert set(splits) == {"train", "val"}
    train, val = splits["train"], splits["val"]
    assert len(train) + len(val) == 700 and abs(len(val) - val_fraction * 700) <= 1
    assert not _row_keys(train) & _row_keys(val)
    expected = np.bincount(data.labels, minlength=7) * val_fraction
    assert np.all(np.abs(np.bincount(val.labels, minlength=7) - expected) <= 1)
    again = split_data(data, val_fraction=val_fraction, seed=3)["val"]
    np.testing.assert_array_equal(again.images, val.images)
    assert not np.array_equal(split_data(data, val_fraction=val_fraction, seed=4)["val"].labels, val.labels)


def test_split_by_usage():
    usage = np.array(["Training"] * 50 + ["PublicTest"] * 20 + ["PrivateTest"] * 10)
    data = labelled(80, usage)
    splits = split_data(data)
    assert {k: len(v) for k, v in splits.items()} == {"train": 50, "val": 20, "test": 10}
    np.testing.assert_array_equal(splits["val"].images, data.images[50:70])
    assert set(splits["test"].usage) == {"PrivateTest"}


def test_stratified_split_and_folds_carve_val_from_training():
    usage = np.array(["Training"] * 140 + ["PublicTest"] * 35 + ["PrivateTest"] * 35)
    data = labelled(210, usage)
    splits = split_data(data, mode="stratified", val_fraction=0.2, seed=1)
    assert {k: len(v) for k, v in splits.items()} == {"train": 112, "val": 28, "test": 70}
    assert set(splits["val"].usage) == {"Training"} and set(splits["test"].usage) == {"PublicTest", "PrivateTest"}
    assert np.all(np.abs(np.bincount(splits["val"].labels, minlength=7) - 4) <= 1)  # stratified
    vals = [split_data(data, folds=5, fold=i, seed=1)["val"] for i in range(5)]
    keys = [_row_keys(v) for v in vals]
    assert sum(len(k) for k in keys) == 140 and len(set().union(*keys)) == 140  # every Training row once
    fold = split_data(data, folds=5, fold=2, seed=1)
    assert not _row_keys(fold["train"]) & _row_keys(fold["val"]) and len(fold["test"]) == 70
    no_usage = labelled(70)
    assert set(split_data(no_usage, mode="stratified")) == {"train", "val"}
    with pytest.raises(DataError, match="fold must be in 0..4"):
        split_data(data, folds=5, fold=5)
    with pytest.raises(DataError, match="unknown split mode 'random'"):
        split_data(data, mode="random")


def test_split_without_publictest_carves_val_from_training():
    data = labelled(100, np.array(["Training"] * 90 + ["PrivateTest"] * 10))
    splits = split_data(data, val_fraction=0.2)
    assert {k: len(v) for k, v in splits.items()} == {"train": 72, "val": 18, "test": 10}
    assert not _row_keys(splits["train"]) & _row_keys(splits["val"])
    assert set(splits["val"].usage) == {"Training"}


def test_split_errors():
    with pytest.raises(DataError, match="no emotion column"):
        split_data(FERData(faces(10), None, None, "pixels.csv"))
    with pytest.raises(DataError, match="val_fraction"):
        split_data(labelled(10), val_fraction=1.5)
    with pytest.raises(DataError, match="Disgust"):
        split_data(FERData(faces(5), np.array([0, 0, 1, 2, 2]), None, "tiny.csv"))


def test_stats_counts_duplicates_and_conflicts():
    images = faces(6)
    images[1] = images[0]  # duplicate within Training
    images[4] = images[2]  # PublicTest row repeating a Training image, with another label
    data = FERData(images, np.array([0, 0, 3, 3, 5, 6]),
                   np.array(["Training"] * 4 + ["PublicTest"] * 2), "mem.csv")
    stats = dataset_stats(data)
    assert stats["splits"]["Training"]["duplicate_rows"] == 1
    assert stats["splits"]["PublicTest"]["in_earlier_splits"] == 1
    assert stats["splits"]["Training"]["class_counts"]["Happy"] == 2
    assert stats["conflicting_duplicates"] == 1
    assert stats["pixel_mean"] == pytest.approx(images.mean())


def test_conflicting_rows_marks_every_row_of_an_image_with_two_labels():
    images = faces(6)
    images[1] = images[0]  # same label twice: kept
    images[3] = images[4] = images[2]  # labels 3, 3, 5: all three rows dropped
    mask = conflicting_rows(images, np.array([0, 0, 3, 3, 5, 6]))
    np.testing.assert_array_equal(mask, [False, False, True, True, True, False])


def test_stats_cli_prints_and_writes_pngs(tmp_path, capsys, small):
    images, labels, usage = small
    path = write(tmp_path / "s.csv.gz", fer_lines(images, labels, usage))
    main(["stats", str(path), "--out", str(tmp_path / "charts")])
    out = capsys.readouterr().out
    assert "Training" in out and "PublicTest" in out and "pixel mean" in out and "max/min" in out
    for name in ("class_distribution.png", "samples.png"):
        assert (tmp_path / "charts" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make_file", ["bad", "missing"])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, make_file):
    path = tmp_path / "input.csv"
    if make_file == "bad":
        path.write_text("emotion,pixels\n1,1 2 3\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["stats", str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(path) in err[0]


def test_synthetic_cli_in_subprocess(tmp_path):
    out = tmp_path / "syn.csv"
    done = subprocess.run([sys.executable, "-m", "fer_keras.data", "synthetic", "--out", str(out), "--n", "50",
                           "--seed", "2"], capture_output=True, text=True, check=True)
    assert "wrote" in done.stdout
    data = load_fer2013(out)
    assert len(data) == 50 and set(data.usage) == {"Training", "PublicTest", "PrivateTest"}


def test_write_csv_round_trip(tmp_path):
    images = faces(5)
    images[0, 0, :3, 0] = [0, 9, 255]
    path = tmp_path / "rt.csv.gz"
    write_csv(path, images, np.arange(5), np.array(["Training"] * 5))
    data = load_fer2013(path)
    np.testing.assert_array_equal(data.images, images)
    assert gzip.decompress(path.read_bytes()).startswith(b"emotion,pixels,Usage\n0,0 9 255 ")
    write_csv(tmp_path / "px.csv", images)
    assert (tmp_path / "px.csv").read_bytes().startswith(b"pixels\n0 9 255 ")


@pytest.mark.slow
@pytest.mark.real_data
def test_real_fer2013_training_counts(real_fer2013):
    data = load_fer2013(real_fer2013)
    assert data.images.shape == (32298, 48, 48, 1) and data.images.dtype == np.uint8
    splits = split_data(data)
    assert np.bincount(splits["train"].labels).tolist() == FER2013_TRAINING_COUNTS
    assert len(splits["val"]) == 3589 and "test" not in splits
    assert data.images.reshape(len(data), NUM_PIXELS)[0, :4].tolist() == [138, 155, 161, 199]
