"""Vectorised decoding of a block of whole FER2013 CSV lines into pixels, labels and Usage codes.

The fast path reads every pixel token of a block at once with numpy byte arithmetic (no per-row
`split`). Rows it flags (odd characters, values over 255, wrong counts) are re-read one by one,
which either accepts them or says exactly what is wrong: never a silent misread.
"""

import re
from dataclasses import dataclass

import numpy as np

from fer_keras.constants import NUM_CLASSES, NUM_PIXELS
from fer_keras.data.ferdata import USAGES

PAD = 3  # blank bytes before a block, so looking back three digits never leaves the array
_SPACE, _CR, _QUOTE, _ZERO = b" \r\"0"
_INTEGER = re.compile(rb"-?[0-9]+")
_MAX_DIGITS = 20  # significant digits of the longest integer field read as a number
_USAGE_CODES = {name.encode(): code for code, name in enumerate(USAGES)}


@dataclass
class Block:
    """Decoded good rows of a block and their line indices in it; `problems` lists
    `(line index in block, reason, detail)` of bad rows."""

    pixels: np.ndarray
    labels: np.ndarray | None
    usage: np.ndarray | None
    lines: np.ndarray
    problems: list
    n_lines: int


def parse_block(block, layout):
    """Decode whole lines laid out as `layout`, held in the bytearray `block` as `PAD` blanks, the
    lines (the last ending in a newline), one blank. Overwrites `block`."""
    a = np.frombuffer(block, np.uint8)
    lines, starts, ends, line_problems, n_lines = _fields(block, a, layout)
    row_problems = {}
    labels = usage = None
    if layout.emotion is not None:
        labels = _labels(a, starts[:, layout.emotion], ends[:, layout.emotion], row_problems)
    if layout.usage is not None:
        usage = _usage(a, starts[:, layout.usage], ends[:, layout.usage], row_problems)
    pixels = _pixels(a, starts[:, layout.pixels], ends[:, layout.pixels], row_problems)

    good = np.ones(len(lines), bool)
    good[list(row_problems)] = False
    problems = line_problems + [(int(lines[row]), *problem) for row, problem in row_problems.items()]
    return Block(
        pixels=pixels[good],
        labels=None if labels is None else labels[good],
        usage=None if usage is None else usage[good],
        lines=lines[good],
        problems=sorted(problems),
        n_lines=n_lines,
    )


def _fields(block, a, layout):
    """Rows with the header's number of fields: their line indices and `[start, end)` of every field."""
    ends = _positions(block, b"\n")
    starts = np.concatenate(([PAD], ends[:-1] + 1))
    ends = ends - (a[ends - 1] == _CR)
    commas = _positions(block, b",")
    first = np.searchsorted(commas, starts)
    n_commas = np.searchsorted(commas, ends) - first
    expected = len(layout.columns) - 1
    nonblank = ends > starts
    problems = [
        (int(i), "wrong field count", f"{n_commas[i] + 1} fields, expected {expected + 1} ({layout.header})")
        for i in np.flatnonzero(nonblank & (n_commas != expected))
    ]
    lines = np.flatnonzero(nonblank & (n_commas == expected))
    cuts = commas[first[lines, None] + np.arange(expected)]
    field_starts = np.column_stack([starts[lines], cuts + 1])
    field_ends = np.column_stack([cuts, ends[lines]])
    quoted = (field_ends - field_starts >= 2) & (a[field_starts] == _QUOTE) & (a[field_ends - 1] == _QUOTE)
    return lines, field_starts + quoted, field_ends - quoted, problems, len(ends)


def _labels(a, starts, ends, problems):
    """int64 labels of the emotion fields; bad ones are recorded in `problems` (row -> reason, detail)."""
    digit = a[starts] - np.uint8(_ZERO)
    labels = digit.astype(np.int64)
    for row in np.flatnonzero((ends - starts != 1) | (digit >= NUM_CLASSES)):
        text = a[starts[row]:ends[row]].tobytes().strip()
        if not _INTEGER.fullmatch(text):
            problems.setdefault(row, ("label not an integer", f"label {_show(text)} is not an integer"))
            continue
        value, shown = _integer(text)
        if 0 <= value < NUM_CLASSES:
            labels[row] = value
        else:
            problems.setdefault(row, ("label outside 0-6", f"label {shown} is outside 0-{NUM_CLASSES - 1}"))
    return labels


def _usage(a, starts, ends, problems):
    """Usage codes (indices into `USAGES`) of the Usage fields; unknown names are recorded in `problems`."""
    codes = np.full(len(starts), -1, np.int8)
    for code, name in enumerate(USAGES):
        rows = np.flatnonzero(ends - starts == len(name))
        same = a[starts[rows, None] + np.arange(len(name))] == np.frombuffer(name.encode(), np.uint8)
        codes[rows[same.all(axis=1)]] = code
    for row in np.flatnonzero(codes < 0):
        text = a[starts[row]:ends[row]].tobytes().strip()
        codes[row] = _USAGE_CODES.get(text, -1)
        if codes[row] < 0:
            problems.setdefault(row, ("unknown Usage", f"Usage {_show(text)} is not one of {', '.join(USAGES)}"))
    return codes


def _pixels(a, starts, ends, problems):
    """uint8 `(rows, 2304)` pixels of the pixel fields; bad rows are recorded in `problems`.

    Blanks every byte outside the pixel fields, then reads each token's value at its last digit
    from the up to two digits before it. Whole-block counts prove that every byte is a digit or a
    blank and that no token has more than three digits; rows failing a check are re-read exactly.
    Overwrites `a`.
    """
    _fill(a, np.concatenate(([0], ends)), np.concatenate((starts, [len(a)])), _SPACE)
    d = a - np.uint8(_ZERO)
    is_digit = d < 10
    d *= is_digit
    # Positions PAD .. len-2 that end a token; `tens` holds the last two digits there.
    last = np.flatnonzero(is_digit[PAD:-1] > is_digit[PAD + 1:])
    tens = d[PAD - 1:-2] * 10
    tens += d[PAD:-1]
    hundreds = d[PAD - 2:-3] * is_digit[PAD - 1:-2]
    values = tens[last] + hundreds[last].astype(np.uint16) * 100
    bounds = np.searchsorted(last, starts - PAD)
    counts = np.diff(bounds, append=len(last))

    n_digits = np.count_nonzero(is_digit)
    digits_read = len(values) + np.count_nonzero(values >= 10) + np.count_nonzero(values >= 100)
    flagged = counts != NUM_PIXELS
    if values.max(initial=0) > 255 or digits_read != n_digits or n_digits + np.count_nonzero(a == _SPACE) != len(a):
        flagged |= _rows_to_recheck(a, is_digit, values, starts, ends, bounds)
    if not flagged.any():
        return values.astype(np.uint8).reshape(-1, NUM_PIXELS)

    pixels = np.zeros((len(starts), NUM_PIXELS), np.uint8)
    pixels[~flagged] = values[np.repeat(~flagged, counts)].reshape(-1, NUM_PIXELS)
    for row in np.flatnonzero(flagged):
        row_pixels, problem = _parse_row(a[starts[row]:ends[row]].tobytes())
        if problem:
            problems.setdefault(row, problem)
        else:
            pixels[row] = row_pixels
    return pixels


def _rows_to_recheck(a, is_digit, values, starts, ends, bounds):
    """Rows with a value over 255, a token not written plainly (4+ digits, leading zeros) or a
    byte other than a digit or a space: the fast read cannot vouch for them."""
    digits_read = 1 + (values >= 10).astype(np.int64) + (values >= 100)
    recheck = np.zeros(len(starts), bool)
    row_tokens = np.split(np.arange(len(values)), bounds[1:])
    for row, (s, e, tokens) in enumerate(zip(starts.tolist(), ends.tolist(), row_tokens)):
        n_digits = np.count_nonzero(is_digit[s:e])
        recheck[row] = (values[tokens].max(initial=0) > 255 or digits_read[tokens].sum() != n_digits
                        or n_digits + np.count_nonzero(a[s:e] == _SPACE) != e - s)
    return recheck


def _parse_row(field):
    """Slow, exact reading of one pixel field: `(uint8 pixels, None)` or `(None, (reason, detail))`."""
    tokens = field.replace(b"\t", b" ").split()
    values = []
    for k, token in enumerate(tokens, 1):
        if not _INTEGER.fullmatch(token):
            return None, ("non-integer pixel", f"pixel {k} is {_show(token)}, not an integer")
        value, shown = _integer(token)
        if not 0 <= value <= 255:
            return None, ("pixel outside 0-255", f"pixel {k} is {shown}, outside 0-255")
        values.append(value)
    if len(tokens) != NUM_PIXELS:
        return None, ("wrong pixel count", f"{len(tokens)} pixel values, expected {NUM_PIXELS}")
    return np.array(values, np.uint8), None


def _integer(text):
    """`(value, shown)` of text matching `_INTEGER`. `int()` refuses over 4300 digits, so past `_MAX_DIGITS`
    significant digits (out of every range here) the value is just +-10**_MAX_DIGITS, shown shortened."""
    sign = "-" if text.startswith(b"-") else ""
    digits = text.lstrip(b"-").lstrip(b"0") or b"0"
    if len(digits) > _MAX_DIGITS:
        return (-1 if sign else 1) * 10**_MAX_DIGITS, f"{sign}{digits[:8].decode()}... ({len(digits)} digits)"
    value = int(sign + digits.decode())
    return value, str(value)


def _positions(text, char):
    """Indices of the (few) occurrences of `char` in `text`: `find` scans with memchr, far faster
    than a numpy pass for a character every few hundred bytes."""
    found = []
    at = text.find(char)
    while at >= 0:
        found.append(at)
        at = text.find(char, at + 1)
    return np.array(found, np.intp)


def _show(text, limit=20):
    """Quoted, shortened text of a bad field for an error message."""
    text = text.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _fill(a, starts, ends, value):
    """Set `a[s:e] = value` for every range, vectorised (the ranges are many and short)."""
    lengths = ends - starts
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    a[offsets + np.arange(lengths.sum())] = value
