"""Read an offline W&B run back (config, history, summary, logged files and tables) for tests and
checks without a server.

The .wandb file is a LevelDB-style log of protobuf `Record`s
(https://github.com/google/leveldb/blob/main/doc/log_format.md) in 32 KiB blocks; wandb 0.31 ships
no Python reader for it.
"""

import json
import os
import re
import struct
import zlib
from pathlib import Path

from fer_keras.core.runs import WANDB_ID_FILE

_FILE_HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
_BLOCK = 32768
_CHUNK = struct.Struct("<IHB")  # crc32 of (type byte + data), data length, chunk type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def read_offline_run(path):
    """What an offline W&B run recorded, for tests and checks without a W&B server.

    `path`: a run folder (its wandb_id.txt names the run, looked up under the folder and
    $WANDB_DIR), an offline-run-* folder or a .wandb file. A resumed run's files are merged.
    Returns {"id", "project", "name", "group", "job_type", "tags", "config", "history" (one dict
    per logged step), "summary", "artifacts" (name, type, aliases, client_id, files: {path: staged
    local file}), "files" (the runs' folders of logged media)}; `read_table` and `logged_file` open
    what a logged value points to.
    """
    run = {"id": None, "project": None, "name": None, "group": None, "job_type": None, "tags": [],
           "config": {}, "history": [], "summary": {}, "artifacts": [], "files": []}
    for wandb_file in _wandb_files(Path(path)):
        run["files"].append(wandb_file.parent / "files")
        for record in _records(wandb_file):
            _apply(run, record)
    run["config"].pop("_wandb", None)
    return run


def _wandb_files(path):
    """The .wandb files of `path`, oldest first."""
    if path.is_file():
        return [path]
    id_file = path / WANDB_ID_FILE
    if id_file.exists():
        run_id = id_file.read_text().strip()
        roots = [path, Path(os.environ.get("WANDB_DIR") or path)]
        files = {f for root in roots for f in root.glob(f"wandb/*-{run_id}/run-{run_id}.wandb")}
    else:
        files = list(path.glob("**/run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no offline W&B run found for {path}")
    return sorted(files, key=lambda f: re.search(r"\d{8}_\d{6}", f.parent.name).group())


def _records(wandb_file):
    """Decode the `Record` protobufs of one .wandb file (a truncated tail is ignored)."""
    from wandb.proto.wandb_internal_pb2 import Record

    buf = Path(wandb_file).read_bytes()
    if not buf.startswith(_FILE_HEADER):
        raise ValueError(f"{wandb_file}: not a W&B transaction log")
    pos, pending = len(_FILE_HEADER), b""
    while pos + _CHUNK.size <= len(buf):
        if _BLOCK - pos % _BLOCK < _CHUNK.size:  # block trailer padding
            pos += _BLOCK - pos % _BLOCK
            continue
        crc, length, kind = _CHUNK.unpack_from(buf, pos)
        data = buf[pos + _CHUNK.size:pos + _CHUNK.size + length]
        pos += _CHUNK.size + length
        if len(data) < length or kind == 0:
            break
        if zlib.crc32(data, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{wandb_file}: corrupt record at byte {pos}")
        pending = data if kind in (_FULL, _FIRST) else pending + data
        if kind in (_FULL, _LAST):
            record = Record()
            record.ParseFromString(pending)
            yield record


def _apply(run, record):
    """Fold one record into the `read_offline_run` dict."""
    kind = record.WhichOneof("record_type")
    if kind == "run":
        r = record.run
        run.update(id=r.run_id, project=r.project, name=r.display_name, group=r.run_group,
                   job_type=r.job_type, tags=list(r.tags))
        _update(run["config"], r.config.update, [])
    elif kind == "config":
        _update(run["config"], record.config.update, record.config.remove)
    elif kind == "summary":
        _update(run["summary"], record.summary.update, record.summary.remove)
    elif kind == "history":
        row = {}
        _update(row, record.history.item, [])
        run["history"].append(row)
    elif kind == "artifact":
        a = record.artifact
        run["artifacts"].append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                 "client_id": a.client_id,
                                 "files": {e.path: Path(e.local_path) for e in a.manifest.contents}})


def _update(target, updates, removes):
    """Apply W&B key updates/removals; a nested key ("a", "b") addresses target["a"]["b"]."""
    for item in updates:
        *parents, leaf = _key(item)
        node = target
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _value(item)
    for item in removes:
        *parents, leaf = _key(item)
        node = target
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)


def _key(item):
    return (item.key,) if item.key else tuple(item.nested_key)


def _value(item):
    if item.value_json:
        return json.loads(item.value_json)
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if kind == "json":
        return json.loads(item.json)
    return None if kind in (None, "none") else getattr(item, kind)


def read_table(run, value):
    """The rows of a logged Table (`value`: its history or summary entry) as dicts; an image cell
    becomes the local path of its PNG.

    A Table holding media is logged as a "run_table" artifact (staged, not in the run folder): its
    entry's `artifact_path` names the artifact's client id and the table file.
    """
    artifact = None
    if "artifact_path" in value:
        client_id, name = value["artifact_path"].removeprefix("wandb-client-artifact://").split("/", 1)
        artifact = next(a for a in run["artifacts"] if a["client_id"] == client_id)
        table = json.loads(artifact["files"][name].read_text())
    else:
        table = json.loads(logged_file(run, value["path"]).read_text())
    return [{column: _cell(run, cell, artifact) for column, cell in zip(table["columns"], row)}
            for row in table["data"]]


def _cell(run, cell, artifact):
    if isinstance(cell, dict) and cell.get("_type") == "image-file":
        return artifact["files"][cell["path"]] if artifact else logged_file(run, cell["path"])
    return cell


def logged_file(run, path):
    """The local file of a media path the run logged (e.g. "media/images/x.png"), from its folders."""
    found = [folder / path for folder in run["files"] if (folder / path).is_file()]
    if not found:
        raise FileNotFoundError(f"{path} is not among the files of run {run['id']}")
    return found[-1]
