"""What `prepare` may write over: never its own input, and with --overwrite only a prepared dataset.

An output that is, contains or lies inside the input would delete (or be indexed as part of) the
release; anything at the output that is not a prepared dataset (recognised by its manifest's
`format`) belongs to someone else. Both are refused before anything is written.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from cdseg.errors import DataError
from cdseg.storage import is_remote, local_path, parse_remote
from cdseg.storage import read_text_if_exists as read_text


def _parts(uri: str) -> tuple[str, ...]:
    """A comparable form of `uri`: the resolved local path's parts, or (store, bucket, key parts)."""
    text = str(uri)
    if is_remote(text):
        remote = parse_remote(text)
        return ("<object store>", remote.bucket, *PurePosixPath("/" + remote.key).parts[1:])  # s3:// and minio:// may be one store
    return local_path(text).resolve(strict=False).parts


def check_not_overlapping(input_uri: str, output_uri: str) -> None:
    """Refuse an output that is, contains or is inside the input (it would delete or pollute the release)."""
    src, dst = _parts(input_uri), _parts(output_uri)
    if src == dst:
        how = "is"
    elif dst == src[: len(dst)]:
        how = "contains"
    elif src == dst[: len(src)]:
        how = "is inside"
    else:
        return
    raise DataError(f"--output {output_uri} {how} the --input {input_uri}; the release must never be written to or "
                    "replaced: choose an --output outside the input")


def is_prepared_dataset(manifest_text: str | None, format_name: str) -> bool:
    """Whether a manifest's text is a cdseg prepared dataset's (of any version)."""
    if manifest_text is None:
        return False
    try:
        manifest = json.loads(manifest_text)
    except json.JSONDecodeError:
        return False
    return isinstance(manifest, dict) and manifest.get("format") == format_name


def check_replaceable(output_uri: str, manifest_uri: str, format_name: str) -> None:
    """Refuse to --overwrite an existing output that is not a prepared dataset."""
    if is_prepared_dataset(read_text(manifest_uri), format_name):
        return
    raise DataError(f"--output {output_uri} exists and is not a cdseg prepared dataset (no valid "
                    f"{PurePosixPath(manifest_uri).name} of format {format_name}); --overwrite replaces only prepared "
                    "datasets: choose another --output or remove it yourself")


#: top-level names a prepared dataset (or a killed prepare's upload of one) has in an s3:// prefix
_OWN_NAMES = ("images", "labels", "config.yaml", "manifest.json", "verified.json")


def check_remote_prefix(output_uri: str, manifest_uri: str, format_name: str) -> None:
    """Refuse an s3:// --output whose prefix holds someone else's objects (a remote prefix has no folder to
    find: objects a prepared dataset never has, without a prepared manifest, are not ours to write beside)."""
    import cdseg.storage as storage
    from cdseg.storage.lease import LEASE_NAME  # boto3 only for s3:// outputs

    try:
        names = storage.list_dir(output_uri)
    except storage.StorageUnavailableError:
        raise
    except storage.StorageError:
        return  # nothing under the prefix
    foreign = [n for n in names if n.rstrip("/") not in (*_OWN_NAMES, LEASE_NAME, storage.MANIFEST_NAME)
               and not n.startswith("labels_")]
    if foreign and not is_prepared_dataset(read_text(manifest_uri), format_name):
        raise DataError(f"--output {output_uri} holds objects that are not a cdseg prepared dataset (e.g. "
                        f"{foreign[0].rstrip('/')}); choose an empty prefix as --output")

