"""Versioned model artifacts: publish atomically, load with validation.

Layout under ``out``::

    out/
      latest                              plain file holding the current version name
      20261126T101530.123456Z-1a2b3c/     one version (name: UTC time + random hex)
        manifest.json                     what is inside, with sha256 + size of every file
        ids.npz                           user_ids, item_ids (fixed-width unicode, no pickle)
        catalog.tsv                       item, title, categories ('|'-joined), when given
        <model>.npz, <model>.json         each model's ``Recommender.save`` output
      .tmp-<version>/                     being written (dot-prefixed: readers ignore it)

Why this shape: a serving process hot-reloads from here, so a version must appear all at once
(written to a temp dir, fsynced, renamed into place), and a reader must be able to tell a good
version from a damaged or tampered one without trusting anything but the manifest's checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_core.calibration import Calibration
from recsys_core.catalog import Catalog, load_catalog
from recsys_core.data import DataError, Interactions
from recsys_core.models import MODELS, Recommender
from recsys_core.models.base import csr_arrays, csr_from
from recsys_core.models.hybrid import COLD_START_PARTS
from recsys_core.models.registry import COMPONENTS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
IDS_FILE = "ids.npz"
CATALOG_FILE = "catalog.tsv"
HISTORY_FILE = "history.npz"
LATEST = "latest"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
STALE_TMP_SECONDS = 3600.0

# Microseconds in the name so that versions published within one second still sort by time;
# the random suffix makes names unique across concurrent writers.
VERSION_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$")

REASONS = frozenset(
    {
        "missing_manifest",
        "bad_manifest",
        "missing_file",
        "checksum_mismatch",
        "unexpected_file",
        "bad_name",
        "outside_root",
        "shape_mismatch",
        "corrupt_array",
        "bad_model",  # a model's files read fine but the model cannot be built from them
        "bad_catalog",
        "empty",
    }
)
REQUIRED_KEYS = (
    "format",
    "version",
    "created_at",
    "trained_at",
    "models",
    "n_users",
    "n_items",
    "data_fingerprint",
    "metrics",
    "files",
)


class ArtifactError(ValueError):
    """A version directory that must not be served; ``reason`` is one of `REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {message}")


@dataclass
class LoadedArtifacts:
    version: str
    path: Path
    manifest: dict[str, Any]
    models: dict[str, Recommender]
    user_ids: np.ndarray
    item_ids: np.ndarray
    catalog: Catalog | None
    history: sp.csr_matrix | None = None
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    """Model name -> its confidence calibration (`recsys_core.calibration`); a version
    published before calibration existed has none, and the server keeps the relative rule."""


# ---------------------------------------------------------------------------------------------
# Names and listing


def is_version_name(name: str) -> bool:
    return VERSION_RE.fullmatch(name) is not None


def new_version_name(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now:%f}Z-{secrets.token_hex(3)}"


def _is_complete(path: Path) -> bool:
    # A symlinked version dir could point anywhere; only real directories count.
    return path.is_dir() and not path.is_symlink() and (path / MANIFEST).is_file()


def list_versions(out: Path) -> list[str]:
    """Names of complete versions (valid name, has a manifest), oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if is_version_name(p.name) and _is_complete(p))


def latest_version(out: Path) -> str | None:
    """The version ``latest`` names when that is valid and complete, else the newest one."""
    out = Path(out)
    try:
        name = (out / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        name = ""
    if is_version_name(name) and _is_complete(out / name):
        return name
    versions = list_versions(out)
    return versions[-1] if versions else None


def store_cursor(params: Mapping[str, object]) -> int:
    """The data store seq a model version folded: its ``params["store_seq"]``; the server
    replays the events after it. A version trained by an older ``recsys-train refresh`` has
    ``params["event_log_records"]`` instead (how many log records it folded); the import stores
    the log in order, so on a store that started empty record n became seq n, and that count
    is the cursor. 0 when the version was trained without the store."""
    for key in ("store_seq", "event_log_records"):
        value = params.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def version_cursors(out: Path) -> dict[str, int]:
    """`store_cursor` of every complete version in ``out``, oldest first; 0 for a manifest
    that cannot be read (the safe answer for retention, which must not outrun any of them)."""
    cursors: dict[str, int] = {}
    for name in list_versions(out):
        try:
            params = json.loads((Path(out) / name / MANIFEST).read_text()).get("params")
        except (OSError, ValueError, AttributeError):
            params = None
        cursors[name] = store_cursor(params) if isinstance(params, dict) else 0
    return cursors


# ---------------------------------------------------------------------------------------------
# Fingerprints and file helpers


def _hash_array(h: Any, a: np.ndarray) -> None:
    # dtype and shape go in too, and byte order is pinned, so equal bytes of different arrays
    # (or the same array on another machine) cannot collide or differ.
    a = np.ascontiguousarray(a)
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    h.update(f"{a.dtype.str}{a.shape};".encode())
    h.update(a.tobytes())


def data_fingerprint(inter: Interactions) -> str:
    """sha256 of the training log (indices, weights, timestamps, id maps); stable across runs."""
    h = hashlib.sha256(b"recsys-interactions-v1;")
    for a in (inter.user_idx, inter.item_idx, inter.weight, inter.timestamp):
        _hash_array(h, a)
    for ids in (inter.user_ids, inter.item_ids):
        _hash_array(h, np.asarray(ids, dtype=np.str_))
    return h.hexdigest()


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (on POSIX through a read-only fd as well)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path | datetime):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clean_text(s: str) -> str:
    # catalog.tsv is read back without quoting, so separators inside fields must go.
    return " ".join(s.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())


# ---------------------------------------------------------------------------------------------
# Publishing


def publish(
    models: Mapping[str, Recommender],
    *,
    out: Path,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    catalog: Catalog | None = None,
    data_fingerprint: str,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    keep: int = 5,
    version: str | None = None,
    trained_at: datetime | None = None,
    history: sp.csr_matrix | None = None,
    calibrations: Mapping[str, Calibration] | None = None,
) -> Path:
    """Write a new version under ``out``, point ``latest`` at it, prune old ones; returns its
    directory. Nothing becomes visible unless the whole version was written and loads back."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    now = datetime.now(UTC)
    version = version or new_version_name(now)
    if not is_version_name(version):
        raise ValueError(f"bad version name {version!r} (expected {VERSION_RE.pattern})")
    user_ids = np.asarray(user_ids).astype(np.str_)  # fixed-width '<U': loads without pickle
    item_ids = np.asarray(item_ids).astype(np.str_)
    for name, model in models.items():
        if name not in MODELS or model.name != name:
            raise ValueError(f"model {name!r} ({type(model).__name__}) is not MODELS[{name!r}]")
        if (model.n_users, model.n_items) != (len(user_ids), len(item_ids)):
            raise ValueError(
                f"model {name!r} is {model.n_users}x{model.n_items}, "
                f"id maps are {len(user_ids)}x{len(item_ids)}"
            )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / version
    if final.exists():
        raise FileExistsError(final)
    tmp = out / f"{TMP_PREFIX}{version}"
    tmp.mkdir()
    try:
        model_entries: dict[str, dict[str, Any]] = {}
        reserved = {MANIFEST, IDS_FILE, CATALOG_FILE, HISTORY_FILE}
        for name, model in models.items():
            rels = [
                Path(p).resolve().relative_to(tmp.resolve()).as_posix() for p in model.save(tmp)
            ]
            if clash := reserved & set(rels):
                raise ValueError(f"model {name!r} wrote {sorted(clash)}, already taken")
            reserved |= set(rels)
            model_entries[name] = {"files": rels, "params": model.params()}
            if info := model.info():
                model_entries[name]["info"] = info
            cal = (calibrations or {}).get(name)
            if cal is not None:
                model_entries[name]["calibration"] = cal.to_dict()
        np.savez(tmp / IDS_FILE, user_ids=user_ids, item_ids=item_ids)
        if history is not None:
            # The training histories: the server scores known users from them and excludes
            # what they have already seen.
            if history.shape != (len(user_ids), len(item_ids)):
                raise ValueError(
                    f"history is {history.shape}, id maps are {len(user_ids)}x{len(item_ids)}"
                )
            np.savez(tmp / HISTORY_FILE, **csr_arrays(history, "history"))
        catalog_entry = None
        if catalog is not None and len(catalog):  # load_catalog rejects a file with no rows
            pl.DataFrame(
                {
                    "item": [_clean_text(s) for s in catalog.item_ids.tolist()],
                    "title": [_clean_text(s) for s in catalog.titles.tolist()],
                    "categories": [
                        "|".join(_clean_text(c).replace("|", "/") for c in cats)
                        for cats in catalog.categories
                    ],
                }
            ).write_csv(tmp / CATALOG_FILE, separator="\t", quote_style="never")
            # Kept so category columns keep their order (load_catalog would use first use).
            catalog_entry = {"n_items": len(catalog), "category_names": catalog.category_names}

        files: dict[str, dict[str, Any]] = {}
        for p in _files_under(tmp):
            if p.is_symlink():
                raise ValueError(f"{p.name}: symlinks are not allowed in artifacts")
            sha, size = _digest(p)
            fsync_path(p)
            files[p.relative_to(tmp).as_posix()] = {"sha256": sha, "bytes": size}
        manifest = {
            "format": FORMAT_VERSION,
            "version": version,
            "created_at": _iso(now),
            "trained_at": _iso(trained_at or now),
            "models": model_entries,
            "n_users": len(user_ids),
            "n_items": len(item_ids),
            "data_fingerprint": data_fingerprint,
            "metrics": metrics or {},
            "params": params or {},
            "catalog": catalog_entry,
            "history": history is not None,
            "files": files,
        }
        # Not sort_keys: "models" keeps publishing order, which is the order a loaded hybrid
        # sums its components in (another order changes scores in the last float bit).
        text = json.dumps(manifest, indent=2, default=_json_default) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        fsync_path(tmp / MANIFEST)
        for d in sorted({p.parent for p in _files_under(tmp)}, key=lambda d: -len(d.parts)):
            fsync_path(d)
        # Self-check: never publish what a server would then refuse (e.g. a model whose
        # load() cannot read its own save()).
        _load_dir(tmp, version, verify=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(out)
    _write_latest(out, version)
    prune(out, keep=keep)
    return final


def _write_latest(out: Path, version: str) -> None:
    tmp = out / f"{LATEST}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / LATEST)
    fsync_path(out)


def prune(out: Path, *, keep: int = 5, stale_after: float = STALE_TMP_SECONDS) -> list[str]:
    """Removes all but the newest ``keep`` versions (never ``latest``'s), temp dirs older than
    ``stale_after`` seconds (crashed writers) and leftover trash. Returns removed versions."""
    out = Path(out)
    versions = list_versions(out)
    pinned = latest_version(out)
    doomed = [v for v in versions[: max(len(versions) - keep, 0)] if v != pinned]
    for v in doomed:
        # Renamed away first: rmtree is not atomic, and a reader must never see a version
        # directory with files missing.
        trash = out / f"{TRASH_PREFIX}{v}-{secrets.token_hex(3)}"
        try:
            os.rename(out / v, trash)
        except OSError:
            continue  # another process got there first
        shutil.rmtree(trash, ignore_errors=True)
    now = time.time()
    for p in out.iterdir():
        if p.name.startswith(TRASH_PREFIX) or (
            p.name.startswith(TMP_PREFIX) and now - p.lstat().st_mtime > stale_after
        ):
            shutil.rmtree(p, ignore_errors=True)
    return doomed


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_version(path: Path, *, verify: bool = True) -> LoadedArtifacts:
    """Loads one version directory, raising `ArtifactError` for anything that does not check
    out. ``verify`` also checks every file's sha256 and size and rejects unlisted files."""
    return _load_dir(Path(path), None, verify=verify)


def _inside(root: Path, rel: Any) -> bool:
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return False
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts:
        return False
    return (root / pure).resolve().is_relative_to(root.resolve())


def _read_manifest(root: Path, name: str) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise ArtifactError("missing_manifest", f"{path}: no manifest")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError("bad_manifest", f"{path}: unreadable JSON ({e})") from e
    if not isinstance(m, dict):
        raise ArtifactError("bad_manifest", f"{path}: not a JSON object")
    if missing := [k for k in REQUIRED_KEYS if k not in m]:
        raise ArtifactError("bad_manifest", f"{path}: missing keys {missing}")
    if m["format"] != FORMAT_VERSION:
        raise ArtifactError("bad_manifest", f"{path}: unknown format {m['format']!r}")
    if m["version"] != name:
        # A copied or renamed directory is not the version its manifest describes.
        raise ArtifactError("bad_manifest", f"{path}: version {m['version']!r} != dir {name!r}")
    ok = (
        isinstance(m["files"], dict)
        and all(
            isinstance(e, dict)
            and isinstance(e.get("sha256"), str)
            and isinstance(e.get("bytes"), int)
            for e in m["files"].values()
        )
        and isinstance(m["models"], dict)
        and all(
            isinstance(e, dict) and isinstance(e.get("files"), list) for e in m["models"].values()
        )
        and all(
            isinstance(m[k], int) and not isinstance(m[k], bool) for k in ("n_users", "n_items")
        )
    )
    if not ok:
        raise ArtifactError("bad_manifest", f"{path}: malformed files/models/n_users/n_items")
    return m


def _check_tree(root: Path, m: dict[str, Any], verify: bool) -> None:
    files: dict[str, dict[str, Any]] = m["files"]
    named = [*files, *(f for e in m["models"].values() for f in e["files"])]
    for rel in named:
        if not _inside(root, rel):
            raise ArtifactError("outside_root", f"{root / MANIFEST}: path {rel!r} leaves {root}")
    for name, entry in m["models"].items():
        if unlisted := [f for f in entry["files"] if f not in files]:
            raise ArtifactError("bad_manifest", f"model {name!r} files {unlisted} lack checksums")
    need = [IDS_FILE] + ([CATALOG_FILE] if m.get("catalog") else [])
    if unlisted := [f for f in need if f not in files]:
        raise ArtifactError("bad_manifest", f"{root / MANIFEST}: {unlisted} not in files")
    for rel, entry in files.items():
        p = root / rel
        if not p.is_file():
            raise ArtifactError("missing_file", f"{p}: listed in the manifest but missing")
        if verify:
            sha, size = _digest(p)
            if size != entry["bytes"] or sha != entry["sha256"]:
                raise ArtifactError(
                    "checksum_mismatch",
                    f"{p}: {size} bytes sha256 {sha[:12]}…, manifest says "
                    f"{entry['bytes']} bytes {str(entry['sha256'])[:12]}…",
                )
    if verify:
        on_disk = {p.relative_to(root).as_posix() for p in _files_under(root)} - {MANIFEST}
        if extra := sorted(on_disk - set(files)):
            raise ArtifactError("unexpected_file", f"{root}: files not in the manifest: {extra}")


def _load_ids(root: Path, m: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    path = root / IDS_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            user_ids, item_ids = z["user_ids"], z["item_ids"]
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError) as e:
        raise ArtifactError("corrupt_array", f"{path}: {type(e).__name__}: {e}") from e
    for key, a in (("user_ids", user_ids), ("item_ids", item_ids)):
        if a.ndim != 1 or a.dtype.kind != "U":
            raise ArtifactError("corrupt_array", f"{path}: {key} is {a.dtype}{a.shape}")
    for key, a, n in (("user_ids", user_ids, m["n_users"]), ("item_ids", item_ids, m["n_items"])):
        if len(a) != n:
            raise ArtifactError(
                "shape_mismatch", f"{path}: {len(a)} {key}, manifest says {n} ({root / MANIFEST})"
            )
    return user_ids, item_ids


def _load_model(root: Path, name: str) -> Recommender:
    cls = MODELS.get(name)
    if cls is None:
        raise ArtifactError("bad_manifest", f"{root / MANIFEST}: unknown model {name!r}")
    try:
        return cls.load(root)
    except FileNotFoundError as e:
        raise ArtifactError("missing_file", f"model {name!r}: {e}") from e
    except json.JSONDecodeError as e:  # a ValueError, but about the .json, not the arrays
        raise ArtifactError("bad_model", f"{root / f'{name}.json'}: {e}") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as e:
        raise ArtifactError(
            "corrupt_array", f"{root / f'{name}.npz'}: {type(e).__name__}: {e}"
        ) from e
    except Exception as e:
        raise ArtifactError(
            "bad_model", f"model {name!r} in {root}: {type(e).__name__}: {e}"
        ) from e


def _attach_hybrid(models: dict[str, Recommender], root: Path) -> None:
    hybrid = models.get("hybrid")
    if hybrid is None:
        return
    # Hybrid saves only its weights; it scores through the other models of the same version.
    hybrid.components = {n: m for n, m in models.items() if n in COMPONENTS}  # type: ignore[attr-defined]
    weights: dict[str, float] = getattr(hybrid, "weights_", {})
    # The cold-start fallback's parts are used whatever the weights.
    needed = {n for n, w in weights.items() if w > 0} | set(COLD_START_PARTS)
    if missing := sorted(needed - set(models)):
        raise ArtifactError("bad_model", f"{root}: hybrid needs models {missing}, not published")


def _load_catalog(root: Path, entry: Any) -> Catalog | None:
    if not entry:
        return None
    path = root / CATALOG_FILE
    try:
        cat = load_catalog(path, format="delimited", separator="\t")
    except (DataError, OSError, ValueError) as e:
        raise ArtifactError("bad_catalog", f"{path}: {e}") from e
    n = entry.get("n_items") if isinstance(entry, dict) else None
    if n is not None and len(cat) != n:
        raise ArtifactError("shape_mismatch", f"{path}: {len(cat)} items, manifest says {n}")
    names = entry.get("category_names") if isinstance(entry, dict) else None
    return Catalog(cat.item_ids, cat.titles, cat.categories, tuple(names or ()))


def _load_dir(root: Path, name: str | None, *, verify: bool) -> LoadedArtifacts:
    """``name`` is the version the directory must hold: its own name for a published one (then
    checked against the regex), the target name for the writer's self-check of its temp dir."""
    if not root.is_dir():
        raise ArtifactError("missing_manifest", f"{root}: not a directory")
    if name is None:
        name = root.name
        if not is_version_name(name):
            raise ArtifactError("bad_name", f"{root}: {name!r} is not a version name")
    if not any(root.iterdir()):
        raise ArtifactError("empty", f"{root}: no files")
    real_root = root.resolve()
    for p in root.rglob("*"):
        if p.is_symlink() and not p.resolve().is_relative_to(real_root):
            raise ArtifactError("outside_root", f"{p}: symlink to {p.resolve()} outside {root}")
    m = _read_manifest(root, name)
    _check_tree(root, m, verify)
    user_ids, item_ids = _load_ids(root, m)
    models = {n: _load_model(root, n) for n in m["models"]}
    for n, model in models.items():
        if (model.n_users, model.n_items) != (len(user_ids), len(item_ids)):
            raise ArtifactError(
                "shape_mismatch",
                f"{root / f'{n}.json'}: model is {model.n_users}x{model.n_items}, "
                f"id maps are {len(user_ids)}x{len(item_ids)}",
            )
    _attach_hybrid(models, root)
    catalog = _load_catalog(root, m.get("catalog"))
    history = _load_history(root, m) if m.get("history") else None
    cals = _load_calibrations(root, m)
    return LoadedArtifacts(name, root, m, models, user_ids, item_ids, catalog, history, cals)


def _load_calibrations(root: Path, m: dict[str, Any]) -> dict[str, Calibration]:
    out: dict[str, Calibration] = {}
    for name, entry in m["models"].items():
        if "calibration" not in entry:
            continue  # published before calibration, or no hit to fit on
        try:
            out[name] = Calibration.from_dict(entry["calibration"])
        except ValueError as e:
            raise ArtifactError("bad_model", f"{root / MANIFEST}: model {name!r}: {e}") from e
    return out


def _load_history(root: Path, m: dict[str, Any]) -> sp.csr_matrix:
    path = root / HISTORY_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            history = csr_from({k: z[k] for k in z.files}, "history")
    except FileNotFoundError as e:
        raise ArtifactError("missing_file", f"{path}: {e}") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError) as e:
        raise ArtifactError("corrupt_array", f"{path}: {type(e).__name__}: {e}") from e
    if history.shape != (m["n_users"], m["n_items"]):
        raise ArtifactError(
            "shape_mismatch",
            f"{path}: history is {history.shape[0]}x{history.shape[1]}, manifest says "
            f"{m['n_users']}x{m['n_items']}",
        )
    return history
