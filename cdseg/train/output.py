"""One step's output folder, `<output>/step-<k>/`, local or remote.

Everything is written locally first (atomically). For an s3:// / minio:// output the local folder is a
work area under `$CDSEG_WORK_DIR` (default `~/.cache/cdseg/train`), and each finished piece (a resume
state, `best/`, `model/`, `config.yaml`, `history.json`) is uploaded with `cdseg.storage` as soon as it
is complete, so a restarted pod on another node finds the newest resume state remotely.
Remote resume folders older than the newest `--trainer.keep-remote-resume` (default 2) are deleted once a
newer one is committed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cdseg.train.checkpoint import PREFIX, STATE_FILE


def _storage():  # noqa: ANN202 - lazy: the storage package may pull boto3 only for remote URIs
    import cdseg.storage as storage

    return storage


def is_remote(uri: str) -> bool:
    """Whether `uri` names object storage rather than a local path (parsed by `cdseg.storage`, the one parser:
    `S3://` is remote, an unsupported scheme or an invalid bucket is a one-line StorageError)."""
    from cdseg.storage.uri import is_remote as remote
    from cdseg.storage.uri import parse_remote

    if not remote(uri):
        return False
    parse_remote(uri)  # validates the bucket and key now, before anything is loaded or written
    return True


def join(uri: str, *parts: str) -> str:
    """`uri/part/...` for paths and URIs alike."""
    return "/".join([uri.rstrip("/"), *parts])


class StepOutput:
    """Local work folder of a step plus where it is published."""

    def __init__(self, output: str, step: int) -> None:
        self.run_uri = output[len("file://"):] if output.startswith("file://") else output
        self.uri = join(self.run_uri, f"step-{step}")
        self.remote = is_remote(self.run_uri)
        if self.remote:
            base = Path(os.environ.get("CDSEG_WORK_DIR", Path.home() / ".cache" / "cdseg" / "train"))
            self.local = base / hashlib.sha256(self.uri.encode()).hexdigest()[:16] / f"step-{step}"
        else:
            self.local = Path(self.uri)

    @property
    def resume_root(self) -> Path:
        return self.local / "resume"

    def path(self, rel: str) -> Path:
        return self.local / rel

    def uri_of(self, rel: str) -> str:
        return join(self.uri, rel)

    def publish(self, rel: str) -> None:
        """Upload local `rel` (file or folder) to the remote step folder; no-op for local outputs."""
        if not self.remote:
            return
        st = _storage()
        src = self.local / rel
        if src.is_dir():
            st.upload_dir(src, self.uri_of(rel), replace=True)
        else:
            st.write_bytes(self.uri_of(rel), src.read_bytes())

    def prune_resume(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` remote resume states (remote outputs only); returns the deleted names.

        Run after a new state is committed: the newest `keep` are all complete, so a restarted pod still
        finds one even while the next upload is in flight.
        """
        if not self.remote:
            return []
        st = _storage()
        root = self.uri_of("resume")
        names = sorted(n.rstrip("/") for n in st.list_dir(root) if n.startswith(PREFIX))
        old = names[:-keep] if keep > 0 else names
        for name in old:
            st.remove_dir(join(root, name))
        return old

    def fetch_resume(self) -> None:
        """Bring the newest complete remote resume state into the local work folder (remote outputs only)."""
        if not self.remote:
            return
        st = _storage()
        root = self.uri_of("resume")
        try:
            names = [n.rstrip("/") for n in st.list_dir(root)]
        except Exception:  # nothing there yet
            return
        its = sorted((n for n in names if n.startswith(PREFIX)), reverse=True)
        for name in its:
            local = self.resume_root / name
            if (local / STATE_FILE).is_file():
                return
            if st.exists(join(root, name)):
                st.download_dir(join(root, name), local, replace=True)
                return
