"""`load_fer2013`: any FER2013 CSV layout, plain or gzip, decoded into a `FERData` (cached by content).

Speed: isal inflates, `parse.parse_block` decodes blocks of lines with numpy, and a thread pool
decodes blocks on the other core while the main thread inflates the next ones.
"""

import collections
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from isal import igzip
from isal.igzip_lib import IsalError
from tqdm import tqdm

from fer_keras.constants import IMAGE_SHAPE
from fer_keras.data import cache
from fer_keras.data.ferdata import USAGES, FERData, Problem
from fer_keras.data.layout import parse_header
from fer_keras.data.parse import PAD, parse_block
from fer_keras.errors import DataError

BLOCK_BYTES = 2 << 20  # small enough for a block's temporaries to stay in the CPU caches
PROGRESS_MIN_BYTES = 4 << 20  # smaller files read in a blink: no bar
_MAX_HEADER_BYTES = 1 << 16
MAX_LINE_BYTES = 1 << 20  # a valid row is about 9 KB (2,304 pixel values); a longer line fails at once
_GZIP_MAGIC = b"\x1f\x8b"


def load_fer2013(path, skip_bad=False):
    """Decode a FER2013 CSV (any layout, plain or gzip) into a `FERData`.

    Bad rows raise `DataError` naming the file, the line and what is wrong; with `skip_bad=True`
    they are dropped instead, listed in `.problems` (counted by reason in `.skipped`), and a warning
    line is printed. `.lines` gives the file line of every row kept.
    The result is cached by file content under `fer_keras.core.paths.cache_dir()`.
    """
    path = Path(path).expanduser()
    key = cache.file_key(path)
    hit = cache.load(key)
    if hit is None:
        data = _read(path)
        cache.save(key, data.images, _meta(data))
    else:
        data = _from_cache(path, *hit)
    return _check_bad_rows(data, skip_bad)


def _check_bad_rows(data, skip_bad):
    """Raise for bad rows unless skipping; when skipping, say how many went and why."""
    n_bad = len(data.problems)
    if not n_bad:
        return data
    first_problem = f"line {data.problems[0].line}: {data.problems[0].detail}"
    if not skip_bad:
        raise DataError(f"{data.path}: {first_problem} ({n_bad} bad row{'s' * (n_bad > 1)} in all; "
                        "skip_bad=True skips bad rows)")
    if not len(data):
        raise DataError(f"{data.path}: no valid rows; first problem: {first_problem}")
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(data.skipped.items()))
    print(f"warning: {data.path}: skipped {n_bad} bad rows ({reasons}); first: {first_problem}", file=sys.stderr)
    return data


def _meta(data):
    """The small arrays stored beside the cached images."""
    meta = {
        "lines": data.lines,
        "problem_lines": np.array([p.line for p in data.problems], np.int64),
        "problem_reasons": np.array([p.reason for p in data.problems], str),
        "problem_details": np.array([p.detail for p in data.problems], str),
    }
    if data.labels is not None:
        meta["labels"] = data.labels
    if data.usage is not None:
        meta["usage"] = data.usage
    return meta


def _from_cache(path, images, meta):
    problems = map(Problem, meta["problem_lines"].tolist(), meta["problem_reasons"].tolist(),
                   meta["problem_details"].tolist())
    return FERData(images, meta.get("labels"), meta.get("usage"), str(path), meta["lines"], list(problems))


def _read(path):
    """Decode the whole file into a `FERData` with every good row and the problems of the bad ones."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: file is empty")
    bar = tqdm(desc=f"reading {path.name}", total=size, unit="B", unit_scale=True, disable=size < PROGRESS_MIN_BYTES)
    workers = len(os.sched_getaffinity(0))
    with open(path, "rb") as raw, ThreadPoolExecutor(workers) as pool:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = igzip.IGzipFile(fileobj=raw) if gzipped else raw
        damaged_gzip = (EOFError, OSError, IsalError) if gzipped else ()
        layout, futures, in_flight = None, [], collections.deque()
        try:
            layout = parse_header(_header(stream, path), path)
            for block in _blocks(stream, lambda: bar.update(raw.tell() - bar.n)):
                if len(in_flight) > workers:  # bound the blocks waiting in memory
                    in_flight.popleft().result()
                in_flight.append(pool.submit(parse_block, block, layout))
                futures.append(in_flight[-1])
        except damaged_gzip as exc:
            line = 1 if layout is None else 2 + sum(f.result().n_lines for f in futures)
            raise DataError(f"{path}: line {line}: gzip data is truncated or corrupt ({exc})") from None
        except _LineTooLong:
            line = 2 + sum(f.result().n_lines for f in futures)
            raise DataError(f"{path}: line {line}: over {MAX_LINE_BYTES:,} bytes without a line break: "
                            "not a FER2013 row") from None
        finally:
            bar.update(raw.tell() - bar.n)
            bar.close()
        blocks = [f.result() for f in futures]
    return _assemble(path, layout, blocks)


def _header(stream, path):
    """The header line, without its newline."""
    line = stream.readline(_MAX_HEADER_BYTES)
    if not line.strip():
        raise DataError(f"{path}: file is empty" if not line else f"{path}: line 1: header line is blank")
    if not line.endswith(b"\n"):
        if len(line) == _MAX_HEADER_BYTES:
            raise DataError(f"{path}: line 1: no header line (first {_MAX_HEADER_BYTES} bytes have no newline)")
        raise DataError(f"{path}: line 2: no data rows after the header")
    return line.rstrip(b"\r\n")


class _LineTooLong(Exception):
    """A line grew past MAX_LINE_BYTES: carrying it from block to block would cost quadratic time."""


def _blocks(stream, on_progress):
    """Bytearrays for `parse_block`: `PAD` blanks, whole lines (about `BLOCK_BYTES`), one blank.
    _LineTooLong as soon as an unfinished line passes MAX_LINE_BYTES."""
    tail = b""
    while True:
        block = bytearray(PAD + len(tail) + BLOCK_BYTES + 2)
        block[:PAD + len(tail)] = b" " * PAD + tail
        start = PAD + len(tail)
        end = start + _read_into(stream, memoryview(block)[start:start + BLOCK_BYTES])
        on_progress()
        if end == start:
            if tail:
                del block[end + 2:]
                block[end:] = b"\n "
                yield block
            return
        cut = block.rfind(b"\n", start, end)
        if end - max(cut + 1, PAD) > MAX_LINE_BYTES:  # the unfinished last line (cut is -1 without a break)
            raise _LineTooLong
        if cut < 0:
            tail = bytes(block[PAD:end])
            continue
        tail = bytes(block[cut + 1:end])
        del block[cut + 2:]
        block[cut + 1:] = b" "
        yield block


def _read_into(stream, view):
    """Fill `view` from `stream` until full or end of file; the number of bytes read."""
    with view:
        done = 0
        while done < len(view):
            n = stream.readinto(view[done:])
            if not n:
                break
            done += n
        return done


def _assemble(path, layout, blocks):
    """One `FERData` from the decoded blocks, block line indices turned into file lines."""
    if not sum(len(b.lines) + len(b.problems) for b in blocks):
        raise DataError(f"{path}: line 2: no data rows after the header")
    first_lines = 2 + np.cumsum([0] + [b.n_lines for b in blocks[:-1]])
    problems = [Problem(int(first + line), reason, detail)
                for b, first in zip(blocks, first_lines) for line, reason, detail in b.problems]
    lines = np.concatenate([b.lines + first for b, first in zip(blocks, first_lines)])
    images = np.concatenate([b.pixels for b in blocks]).reshape(-1, *IMAGE_SHAPE)
    labels = np.concatenate([b.labels for b in blocks]) if layout.emotion is not None else None
    usage = np.array(USAGES)[np.concatenate([b.usage for b in blocks])] if layout.usage is not None else None
    return FERData(images, labels, usage, str(path), lines, problems)
