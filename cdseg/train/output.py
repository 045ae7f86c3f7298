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

from cdseg import storage
from cdseg.storage import is_remote, join
from cdseg.train.checkpoint import PREFIX, STATE_FILE


class StepOutput:
    """Local work folder of a step plus where it is published."""

    def __init__(self, output: str, step: int) -> None:
        self.remote = is_remote(output)  # the one URI parser: `S3://` is remote, a bad scheme or bucket fails now
        self.run_uri = str(storage.parse_remote(output)) if self.remote else str(storage.local_path(output))
        self.uri = join(self.run_uri, f"step-{step}")
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
        src = self.local / rel
        if src.is_dir():
            storage.upload_dir(src, self.uri_of(rel), replace=True)
        else:
            storage.write_bytes(self.uri_of(rel), src.read_bytes())

    def prune_resume(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` remote resume states (remote outputs only); returns the deleted names.

        Run after a new state is committed: the newest `keep` are all complete, so a restarted pod still
        finds one even while the next upload is in flight.
        """
        if not self.remote:
            return []
        root = self.uri_of("resume")
        names = sorted(n.rstrip("/") for n in storage.list_dir(root) if n.startswith(PREFIX))
        old = names[:-keep] if keep > 0 else names
        for name in old:
            storage.remove_dir(join(root, name))
        return old

    def fetch_resume(self) -> None:
        """Bring the newest complete remote resume state into the local work folder (remote outputs only)."""
        if not self.remote:
            return
        root = self.uri_of("resume")
        try:
            names = [n.rstrip("/") for n in storage.list_dir(root)]
        except storage.StorageUnavailableError:
            raise  # an outage: retryable, not "no state yet"
        except storage.StorageError:  # nothing there yet
            return
        its = sorted((n for n in names if n.startswith(PREFIX)), reverse=True)
        for name in its:
            local = self.resume_root / name
            if (local / STATE_FILE).is_file():
                return
            if storage.exists(join(root, name)):
                storage.download_dir(join(root, name), local, replace=True)
                return
