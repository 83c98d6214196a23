"""`FERData`: decoded FER2013 rows (images, labels, Usage, file lines) kept together so subsets stay aligned."""

import collections
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

USAGES = ("Training", "PublicTest", "PrivateTest")


class Problem(NamedTuple):
    """A bad row: its 1-based file line, the reason (a short category) and what exactly is wrong."""

    line: int
    reason: str
    detail: str


@dataclass
class FERData:
    """Faces as uint8 `(N, 48, 48, 1)`, labels int64 `(N,)` or None, Usage str `(N,)` or None.

    `lines` holds each row's 1-based file line (header = line 1), or None for rows not read from a
    file; `problems` lists the `Problem`s of the bad rows `load_fer2013(..., skip_bad=True)` dropped.
    """

    images: np.ndarray
    labels: np.ndarray | None
    usage: np.ndarray | None
    path: str
    lines: np.ndarray | None = None
    problems: list = field(default_factory=list)

    def __len__(self):
        return len(self.images)

    def __repr__(self):
        columns = ", ".join(name for name in ("labels", "usage") if getattr(self, name) is not None) or "pixels only"
        return f"FERData({self.path!r}, {len(self)} rows, {columns}, skipped={self.skipped})"

    @property
    def skipped(self):
        """The number of bad rows per reason."""
        return dict(collections.Counter(problem.reason for problem in self.problems))

    def subset(self, index):
        """Rows selected by an index array or boolean mask, as a new `FERData` from the same file."""
        return FERData(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            usage=None if self.usage is None else self.usage[index],
            path=self.path,
            lines=None if self.lines is None else self.lines[index],
            problems=list(self.problems),
        )
