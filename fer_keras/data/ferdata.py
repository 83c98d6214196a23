"""`FERData`: decoded FER2013 rows (images, labels, Usage) kept together so subsets stay aligned."""

from dataclasses import dataclass, field

import numpy as np

USAGES = ("Training", "PublicTest", "PrivateTest")


@dataclass
class FERData:
    """Faces as uint8 `(N, 48, 48, 1)`, labels int64 `(N,)` or None, Usage str `(N,)` or None.

    `skipped` maps a reason to the number of bad rows `load_fer2013(..., skip_bad=True)` dropped.
    """

    images: np.ndarray
    labels: np.ndarray | None
    usage: np.ndarray | None
    path: str
    skipped: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.images)

    def __repr__(self):
        columns = ", ".join(name for name in ("labels", "usage") if getattr(self, name) is not None) or "pixels only"
        return f"FERData({self.path!r}, {len(self)} rows, {columns}, skipped={self.skipped})"

    def subset(self, index):
        """Rows selected by an index array or boolean mask, as a new `FERData` from the same file."""
        return FERData(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            usage=None if self.usage is None else self.usage[index],
            path=self.path,
            skipped=dict(self.skipped),
        )
