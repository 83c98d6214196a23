"""What the original data-exploration notebook reported: rows per split and class, imbalance,
duplicate images within and across splits, blank images, pixel mean and std."""

import numpy as np

from fer_keras.constants import CLASS_NAMES, NUM_CLASSES
from fer_keras.data.ferdata import USAGES

ALL = "all"


def split_names(data):
    """The Usage values present, in FER2013 order, or just "all" for a file without Usage."""
    if data.usage is None:
        return [ALL]
    return [u for u in USAGES if (data.usage == u).any()]


def split_rows(data, name):
    """Boolean mask of the rows of split `name`."""
    return np.ones(len(data), bool) if name == ALL else data.usage == name


def dataset_stats(data):
    """A dict of the numbers `format_stats` prints (also handy as JSON)."""
    splits = split_names(data)
    image_ids = _image_ids(data.images)
    stats = {"path": data.path, "rows": len(data), "splits": {}, "skipped": dict(data.skipped)}
    seen = np.zeros(image_ids.max(initial=-1) + 1, bool)
    for name in splits:
        rows = split_rows(data, name)
        ids = image_ids[rows]
        entry = {"rows": int(rows.sum()), "duplicate_rows": int(len(ids) - len(np.unique(ids))),
                 "in_earlier_splits": int(seen[ids].sum())}
        if data.labels is not None:
            counts = np.bincount(data.labels[rows], minlength=NUM_CLASSES)
            entry["class_counts"] = dict(zip(CLASS_NAMES, counts.tolist()))
            entry["imbalance_ratio"] = float(counts.max() / counts.min()) if counts.min() else float("inf")
        stats["splits"][name] = entry
        seen[ids] = True
    flat = data.images.reshape(len(data), -1)
    stats["blank_images"] = int((flat.min(axis=1) == flat.max(axis=1)).sum())
    if data.labels is not None:
        stats["conflicting_duplicates"] = _conflicting(image_ids, data.labels)
    stats["pixel_mean"] = float(flat.mean(dtype=np.float64))
    stats["pixel_std"] = float(flat.std(dtype=np.float64))
    return stats


def format_stats(stats):
    """The plain-text report of `dataset_stats`."""
    lines = [f"{stats['path']}: {stats['rows']} rows"]
    if stats["skipped"]:
        lines.append("skipped bad rows: " + ", ".join(f"{n} {reason}" for reason, n in stats["skipped"].items()))
    splits = stats["splits"]
    labelled = all("class_counts" in s for s in splits.values())
    header = f"{'split':<12}{'rows':>7}"
    if labelled:
        header += "".join(f"{c:>9}" for c in CLASS_NAMES) + f"{'max/min':>9}"
    lines += ["", header + f"{'dup rows':>10}{'in earlier':>11}"]
    for name, s in splits.items():
        row = f"{name:<12}{s['rows']:>7}"
        if labelled:
            row += "".join(f"{n:>9}" for n in s["class_counts"].values()) + f"{s['imbalance_ratio']:>9.1f}"
        lines.append(row + f"{s['duplicate_rows']:>10}{s['in_earlier_splits']:>11}")
    lines += ["", "dup rows: rows repeating an image earlier in the same split; in earlier: rows whose image "
              "is also in a split listed above"]
    lines.append(f"blank (constant) images: {stats['blank_images']}")
    if "conflicting_duplicates" in stats:
        lines.append(f"images repeated with different labels: {stats['conflicting_duplicates']}")
    lines.append(f"pixel mean {stats['pixel_mean']:.2f}, std {stats['pixel_std']:.2f} (0-255 scale)")
    return "\n".join(lines)


def _image_ids(images):
    """An id per row, equal for identical images."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return np.unique(flat.view(np.dtype((np.void, flat.shape[1]))).ravel(), return_inverse=True)[1].ravel()


def conflicting_rows(images, labels):
    """Boolean mask of the rows whose image occurs in `images` with more than one label."""
    image_ids = _image_ids(images)
    return _conflicting_ids(image_ids, labels)[image_ids]


def _conflicting(image_ids, labels):
    """Number of distinct images that occur with more than one label."""
    return int(_conflicting_ids(image_ids, labels).sum())


def _conflicting_ids(image_ids, labels):
    """Per image id, whether it occurs with more than one label."""
    pairs = np.unique(np.stack([image_ids, labels]), axis=1)
    return np.bincount(pairs[0], minlength=image_ids.max(initial=-1) + 1) > 1
