"""`prepare --overwrite` replaces only a prepared dataset, and never the input itself."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cdseg.cli.main import main
from cdseg.data.ownership import check_not_overlapping
from cdseg.errors import DataError


@pytest.fixture
def release(synth_release: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "rel"
    shutil.copytree(synth_release, dst)
    return dst


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    rc = main(["prepare", *args, "--patch-size", "128", "--overwrite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("where", ["same", "parent", "child"])
def test_overwrite_never_touches_the_input(release: Path, tmp_path: Path, capsys, where: str):
    before = tree(release)
    output = {"same": release, "parent": tmp_path, "child": release / "prepared"}[where]
    err = refused(capsys, "--input", str(release), "--output", str(output))
    how = {"same": "is", "parent": "contains", "child": "is inside"}[where]
    assert f"{how} the --input" in err and "outside the input" in err
    assert tree(release) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel"]  # no staging folder either


def test_overlap_sees_through_symlinks_and_trailing_slashes(tmp_path: Path):
    (tmp_path / "rel").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "rel")
    with pytest.raises(DataError, match="is the --input"):
        check_not_overlapping(str(tmp_path / "rel") + "/", str(tmp_path / "link"))
    with pytest.raises(DataError, match="is inside the --input"):
        check_not_overlapping("s3://bucket/release", "s3://bucket/release/prepared/")
    check_not_overlapping("s3://bucket/release", "s3://bucket/release-prepared")  # a sibling, not a child
    check_not_overlapping(str(tmp_path / "rel"), str(tmp_path / "rel2"))


@pytest.mark.parametrize("kind", ["folder", "bad-manifest", "other-format"])
def test_overwrite_refuses_what_is_not_a_prepared_dataset(release: Path, tmp_path: Path, capsys, kind: str):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    if kind == "bad-manifest":
        (out / "manifest.json").write_text("{not json")
    elif kind == "other-format":
        (out / "manifest.json").write_text('{"format": "someone-else"}')
    before = tree(out)
    err = refused(capsys, "--input", str(release), "--output", str(out))
    assert "is not a cdseg prepared dataset" in err and "replaces only prepared datasets" in err
    assert tree(out) == before
    # without --overwrite the message does not suggest --overwrite, which would be refused too
    assert main(["prepare", "--input", str(release), "--output", str(out), "--patch-size", "128"]) == 2
    assert "--overwrite replaces only" in capsys.readouterr().err


def test_output_that_is_a_file_or_under_one(release: Path, tmp_path: Path, capsys):
    (tmp_path / "f").write_text("keep me")
    err = refused(capsys, "--input", str(release), "--output", str(tmp_path / "f"))
    assert "is a file; pass a folder path" in err
    err = refused(capsys, "--input", str(release), "--output", str(tmp_path / "f" / "sub"))
    assert "lies under" in err and "which is a file" in err
    assert (tmp_path / "f").read_text() == "keep me"


def test_overwrite_still_replaces_a_prepared_dataset(release: Path, prepared_dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "p"
    shutil.copytree(prepared_dataset, out)
    assert main(["prepare", "--input", str(release), "--output", str(out), "--patch-size", "64", "--overwrite"]) == 0
    assert '"patch_size":64' in (out / "manifest.json").read_text()


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "lock-file"])
def test_a_second_prepare_on_the_same_output_is_refused_until_the_holder_dies(release: Path, tmp_path: Path, capsys,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              flock: bool):
    import errno
    import fcntl
    import os
    import signal
    import subprocess
    import sys

    refuse = ("import errno, fcntl\ndef refuse(fd, op): raise OSError(errno.ENOLCK, 'No locks available')\n"
              "fcntl.flock = refuse\n")
    if not flock:  # as on NFS without lockd: both runs fall back to the O_EXCL lock file

        def no_locks(fd: int, op: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

        monkeypatch.setattr(fcntl, "flock", no_locks)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", ("" if flock else refuse) + "import sys, time; from pathlib import Path; "
         "from cdseg.utils.lease import output_lease\n"
         "with output_lease(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        err = refused(capsys, "--input", str(release), "--output", str(out))
        assert f"--output {out} is in use by another cdseg run (host " in err and f"pid {holder.pid}, started" in err
        assert not out.exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a crashed holder: the kernel drops its lock (or its pid is gone)
        holder.wait()
    assert main(["prepare", "--input", str(release), "--output", str(out), "--patch-size", "128"]) == 0
    assert (out / "manifest.json").is_file()


def test_temporaries_of_killed_runs_are_removed(release: Path, tmp_path: Path):
    out = tmp_path / "out"
    stale = [tmp_path / ".out.tmp-abc123", tmp_path / ".out.old-def456"]
    for folder in stale:
        (folder / "images").mkdir(parents=True)
        (folder / "images" / "2_10.tif").write_bytes(b"\0" * 4096)
    other = tmp_path / ".other.tmp-abc123"  # another output's staging folder: not ours to remove
    other.mkdir()
    assert main(["prepare", "--input", str(release), "--output", str(out), "--patch-size", "128"]) == 0
    assert not any(p.exists() for p in stale) and other.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-abc123", "out", "rel"]  # no lock file left


@pytest.mark.parametrize(("uri", "message"), [("gs://bucket/rel", "unsupported URI scheme 'gs'"),
                                              ("s3://Bad_Bucket/rel", "invalid bucket name 'Bad_Bucket'")])
def test_input_uris_are_parsed_by_the_storage_layer(uri: str, message: str, tmp_path: Path, capsys):
    rc = main(["prepare", "--input", uri, "--output", str(tmp_path / "out"), "--patch-size", "128"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_upper_case_s3_scheme_is_remote():
    from cdseg.storage import is_remote

    assert is_remote("S3://bucket/x") and is_remote("minio://bucket/x") and not is_remote("/data/x")
