"""Verify a local prepared dataset against its manifest's sha256, cheaply: once, and only what changed.

`prepare` records a stamp per data file (size, mtime, ctime, inode and the sha256 it was checked
against) in `verified.json`. Opening the dataset for training or testing stats every file: a file
whose stamp still matches was verified before and is not read; any other file (copied, edited,
restored) is hashed against the manifest, and the stamps are written again (in the dataset folder,
or in the user's cache when the folder is read-only). `full=True` hashes every file. Each dataset is
checked once per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cdseg.errors import DataError
from cdseg.utils.atomic import write_text_atomic
from cdseg.utils.hashing import sha256_file

log = logging.getLogger(__name__)
STAMPS = "verified.json"
_checked: set[tuple[str, str]] = set()  # (resolved root, manifest fingerprint) verified in this process


def file_stamp(path: Path, sha256: str) -> list[int | str]:
    """What must stay the same for a verified file to still be the verified bytes."""
    st = path.stat()
    return [sha256, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def write_stamps(root: Path, checksums: dict[str, str]) -> None:
    """Record the stamps of files just written (and hashed) by prepare."""
    stamps = {rel: file_stamp(root / rel, sha) for rel, sha in checksums.items()}
    write_text_atomic(root / STAMPS, json.dumps(stamps, separators=(",", ":")))


def _fallback(root: Path) -> Path:
    base = Path(os.environ.get("CDSEG_CACHE_DIR") or Path.home() / ".cache" / "cdseg")
    return base / "verified" / f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}.json"


def _load(path: Path) -> dict[str, list[int | str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


DENIED = "(permission denied)"


def check_readable(problems: list[str], root: Path) -> None:
    """Raise a DataError naming the first file this user may not read: its permissions, not damage, are the fix."""
    for problem in problems:
        if problem.endswith(DENIED):
            path = root / problem[: -len(DENIED) - 1]
            raise DataError(f"this user (uid {os.getuid()}) may not read {path} (permission denied); give it read "
                            "access to the whole prepared dataset (or copy it somewhere readable)")


def find_damage(root: Path, checksums: dict[str, str], *, full: bool = False, threads: int = 4) -> tuple[list[str], int]:
    """(problems, files hashed): each problem "<file> (missing)" / "(sha256 differs)" / "(unreadable: ...)".

    Files whose stamp matches their last verification are not read (all are, with `full`); when every
    file is whole, the stamps are recorded again.
    """
    beside, cached = _load(root / STAMPS), _load(_fallback(root))  # either may be the newer record
    missing, to_hash = [], []
    for rel, sha in checksums.items():
        path = root / rel
        try:
            current = file_stamp(path, sha)
        except PermissionError:
            missing.append(f"{rel} {DENIED}")
            continue
        except OSError:
            missing.append(f"{rel} (missing)")
            continue
        if full or current not in (beside.get(rel), cached.get(rel)):
            to_hash.append(rel)

    def differs(rel: str) -> str | None:
        try:
            return None if sha256_file(root / rel) == checksums[rel] else f"{rel} (sha256 differs)"
        except PermissionError:
            return f"{rel} {DENIED}"
        except OSError as exc:
            return f"{rel} (unreadable: {exc.strerror})"

    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="cdseg-verify") as pool:
        bad = missing + [problem for problem in pool.map(differs, to_hash) if problem is not None]
    if not bad and to_hash:
        log.info("verified %d of %d files of %s against their sha256", len(to_hash), len(checksums), root)
        _save(root, {rel: file_stamp(root / rel, sha) for rel, sha in checksums.items()})
    return bad, len(to_hash)


def verify_dataset(root: Path, checksums: dict[str, str], uri: str, *, fingerprint: str = "",
                   full: bool = False, threads: int = 4) -> tuple[int, int]:
    """Check a local prepared dataset once per process; returns (files checked, files hashed).

    A missing or changed file is a DataError naming it (and how many more there are).
    """
    key = (str(root.resolve()), fingerprint)
    if key in _checked and not full:
        return len(checksums), 0
    bad, hashed = find_damage(root, checksums, full=full, threads=threads)
    check_readable(bad, root)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise DataError(f"{uri} is damaged: {bad[0]}{more} of {len(checksums)} files; "
                        "run cdseg prepare again with --overwrite")
    _checked.add(key)
    return len(checksums), hashed


def _save(root: Path, stamps: dict[str, list[int | str]]) -> None:
    """Keep the stamps beside the dataset, or in the user's cache when the dataset is read-only."""
    text = json.dumps(stamps, separators=(",", ":"))
    for path in (root / STAMPS, _fallback(root)):
        try:
            write_text_atomic(path, text)
            return
        except OSError:
            continue
    log.warning("could not record the verification of %s (read-only folder and cache); the next run hashes again",
                root)
