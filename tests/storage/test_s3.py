"""S3 through moto's server (real HTTP on loopback, real boto3): folders, multipart, integrity, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import cdseg.storage as storage
from cdseg.storage import MANIFEST_NAME, IntegrityError, StorageConfig, StorageError

from .conftest import BUCKET, configure

MiB = 1024 * 1024


def _key(uri: str) -> str:
    return uri.split("/", 3)[3]


def _fake_dataset(root: Path) -> dict[str, bytes]:
    """A prepared-dataset-like tree: a manifest.json, nested patch files, some empty."""
    files = {"manifest.json": json.dumps({"classes": ["a", "b"]}).encode(), "empty.txt": b""}
    for scene in range(3):
        for patch in range(4):
            files[f"patches/scene{scene}/p{patch:03d}.npy"] = os.urandom(1000 + 37 * patch)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_object_round_trip(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "metrics.json")
    storage.write_bytes(uri, b'{"miou": 0.5}')
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b'{"miou": 0.5}'
    head = s3["client"].head_object(Bucket=BUCKET, Key=_key(uri))
    assert len(head["Metadata"]["sha256"]) == 64
    local = storage.local_file(uri)
    assert local.read_bytes() == b'{"miou": 0.5}'
    assert local.name == "metrics.json"  # the object's own name (readers may sniff the extension) ...
    sha = head["Metadata"]["sha256"]
    assert local.samefile(s3["cache"] / "objects" / sha[:2] / sha)  # ... linked to the checksum-keyed copy
    assert storage.local_file(uri) == local
    assert not storage.exists(storage.join(s3["root"], "other.json"))


def test_dataset_folder_round_trip(s3: dict[str, Any], tmp_path: Path) -> None:
    files = _fake_dataset(tmp_path / "prepared")
    uri = storage.join(s3["root"], "datasets", "potsdam")
    storage.upload_dir(str(tmp_path / "prepared"), uri)
    assert storage.exists(uri)
    assert storage.list_dir(uri) == ["empty.txt", "manifest.json", "patches"]
    assert storage.list_dir(storage.join(uri, "patches")) == ["scene0", "scene1", "scene2"]
    local = storage.local_dir(uri)
    for rel, data in files.items():
        assert (local / rel).read_bytes() == data
    assert storage.read_bytes(storage.join(uri, "patches/scene1/p002.npy")) == files["patches/scene1/p002.npy"]
    assert storage.local_dir(uri) == local  # second call: served from the cache
    out = storage.download_dir(uri, str(tmp_path / "copy"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [*files, MANIFEST_NAME])


def test_checkpoint_multipart_round_trip(s3: dict[str, Any]) -> None:
    weights = os.urandom(12 * MiB + 123)  # threshold 5 MiB, parts of 5 MiB: 3 parts
    uri = storage.join(s3["root"], "step-0", "model")
    with storage.staged_dir(uri) as tmp:
        (tmp / "model.safetensors").write_bytes(weights)
        (tmp / "model.json").write_text(json.dumps({"step": 0}))
        assert not storage.exists(uri)  # nothing committed while the block runs
    head = s3["client"].head_object(Bucket=BUCKET, Key=_key(uri) + "/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # really multipart
    manifest = json.loads(storage.read_bytes(storage.join(uri, MANIFEST_NAME)))
    assert {f["path"]: f["size"] for f in manifest["files"]} == {"model.json": 11, "model.safetensors": len(weights)}
    local = storage.local_dir(uri)
    assert (local / "model.safetensors").read_bytes() == weights
    assert storage.local_file(storage.join(uri, "model.safetensors")).read_bytes() == weights


def test_single_large_object_is_multipart(s3: dict[str, Any]) -> None:
    data = os.urandom(6 * MiB)
    uri = storage.join(s3["root"], "big.bin")
    storage.write_bytes(uri, data)
    assert s3["client"].head_object(Bucket=BUCKET, Key=_key(uri))["ETag"].strip('"').endswith("-2")
    assert storage.read_bytes(uri) == data
    assert storage.local_file(uri).read_bytes() == data


def test_prefix_without_manifest_is_ignored(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "half-written")
    s3["client"].put_object(Bucket=BUCKET, Key=_key(uri) + "/model.safetensors", Body=b"partial")
    assert not storage.exists(uri)
    with pytest.raises(StorageError, match="not a committed folder") as info:
        storage.local_dir(uri)
    assert uri in str(info.value)


def test_replace_swaps_the_folder(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "out")
    with storage.staged_dir(uri) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "old-only").write_text("x")
    with pytest.raises(StorageError, match="already holds a committed folder"), storage.staged_dir(uri):
        pass
    storage.local_dir(uri)  # caches the first manifest in this process
    with storage.staged_dir(uri, replace=True) as tmp:
        (tmp / "a").write_text("2")
    assert storage.list_dir(uri) == ["a"]
    assert (storage.local_dir(uri) / "a").read_text() == "2"
    assert storage.read_bytes(storage.join(uri, "a")) == b"2"
    listed = s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=_key(uri) + "/")
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]) == [MANIFEST_NAME, "a"]


def test_failed_staged_upload_commits_nothing(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "crashed")
    with pytest.raises(RuntimeError), storage.staged_dir(uri) as tmp:
        (tmp / "x").write_text("x")
        raise RuntimeError("training crashed")
    assert not storage.exists(uri)
    assert s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=_key(uri)).get("KeyCount") == 0


def test_upload_failing_midway_leaves_no_manifest(s3: dict[str, Any]) -> None:
    configure(s3["proxy"].url, s3["cache"], max_attempts=1)
    uri = storage.join(s3["root"], "midway")
    s3["proxy"].deny_prefix = f"/{BUCKET}/{_key(uri)}/b"
    with pytest.raises(StorageError, match="access denied") as info, storage.staged_dir(uri) as tmp:
        (tmp / "a").write_text("a")
        (tmp / "b").write_text("b")
    assert f"{uri}/b" in str(info.value)
    s3["proxy"].deny_prefix = None
    assert not storage.exists(uri)
    keys = [o["Key"] for o in s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=_key(uri)).get("Contents", [])]
    assert keys == []  # the uploaded "a" was cleaned up


def test_corrupted_folder_object_is_detected(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "ckpt")
    with storage.staged_dir(uri) as tmp:
        (tmp / "model.safetensors").write_bytes(b"\x01" * 4096)
    # Overwrite one object behind the storage layer's back: same size, different bytes.
    s3["client"].put_object(Bucket=BUCKET, Key=_key(uri) + "/model.safetensors", Body=b"\x02" * 4096)
    for call in (storage.local_dir, lambda u: storage.read_bytes(storage.join(u, "model.safetensors")),
                 lambda u: storage.local_file(storage.join(u, "model.safetensors"))):
        with pytest.raises(IntegrityError, match="corrupted") as info:
            call(uri)
        assert f"{uri}/model.safetensors" in str(info.value)
    assert not any((s3["cache"] / "objects").rglob("*")) or all(
        p.read_bytes() != b"\x02" * 4096 for p in (s3["cache"] / "objects").rglob("*") if p.is_file())


def test_corrupted_single_object_is_detected(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "weights.bin")
    storage.write_bytes(uri, b"good" * 100)
    sha = s3["client"].head_object(Bucket=BUCKET, Key=_key(uri))["Metadata"]["sha256"]
    s3["client"].put_object(Bucket=BUCKET, Key=_key(uri), Body=b"evil" * 100, Metadata={"sha256": sha})
    with pytest.raises(IntegrityError, match=uri):
        storage.read_bytes(uri)
    with pytest.raises(IntegrityError, match=uri):
        storage.local_file(uri)


def test_minio_uris(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """KFP writes minio://bucket/key; the endpoint comes from the environment like for s3://."""
    storage.configure(StorageConfig(cache_dir=str(s3["cache"]), multipart_threshold_mb=5, multipart_chunksize_mb=5))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint"])
    uri = "minio://" + s3["root"][len("s3://"):] + "/artifacts/model"
    with storage.staged_dir(uri) as tmp:
        (tmp / "model.json").write_text("{}")
    assert storage.exists(uri)
    assert storage.exists(uri.replace("minio://", "s3://"))  # the same object store
    assert (storage.local_dir(uri) / "model.json").read_text() == "{}"
    assert storage.read_bytes(storage.join(uri, "model.json")) == b"{}"


# ---------------------------------------------------------------------------------------- bad input
def _error(call: Any, uri: str) -> str:
    with pytest.raises(StorageError) as info:
        call(uri)
    message = str(info.value)
    assert uri in message and "\n" not in message
    return message


def test_missing_bucket(s3: dict[str, Any]) -> None:
    uri = "s3://no-such-bucket-cdseg/x/y"
    assert "bucket 'no-such-bucket-cdseg' does not exist" in _error(storage.read_bytes, uri)
    assert "does not exist" in _error(storage.exists, uri)
    assert "does not exist" in _error(storage.local_file, uri)
    assert "does not exist" in _error(lambda u: storage.write_bytes(u, b"x"), uri)


def test_missing_object(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "nothing-here")
    assert "does not exist" in _error(storage.read_bytes, uri)
    assert "does not exist" in _error(storage.local_file, uri)
    assert "does not exist" in _error(storage.list_dir, uri)


def test_missing_credentials(s3: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    configure(s3["proxy"].url, s3["cache"])
    message = _error(storage.read_bytes, storage.join(s3["root"], "x"))
    assert "no S3 credentials" in message and "AWS_ACCESS_KEY_ID" in message


def test_wrong_endpoint(s3: dict[str, Any], tmp_path: Path) -> None:
    from .conftest import _free_port

    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there: connection refused
    configure(endpoint, s3["cache"], max_attempts=2)
    message = _error(storage.read_bytes, storage.join(s3["root"], "x"))
    assert "cannot reach the S3 endpoint" in message and endpoint in message and "endpoint_url" in message


def test_access_denied(s3: dict[str, Any]) -> None:
    uri = storage.join(s3["root"], "secret")
    s3["proxy"].deny_prefix = f"/{BUCKET}/{_key(uri)}"
    assert "access denied" in _error(storage.read_bytes, uri)
    assert "access denied" in _error(lambda u: storage.write_bytes(u, b"x"), uri)


def test_bucket_root_is_not_an_object(s3: dict[str, Any]) -> None:
    assert "names a bucket" in _error(storage.read_bytes, f"s3://{BUCKET}")
    with pytest.raises(StorageError, match="bucket root"), storage.staged_dir(f"s3://{BUCKET}"):
        pass


@pytest.mark.parametrize("how", ["edited", "bit-rot"])
def test_cached_object_is_verified_by_checksum_not_size(s3: dict[str, Any], tmp_path: Path, how: str) -> None:
    from cdseg.storage import cache

    uri = storage.join(s3["root"], "ds")
    files = _fake_dataset(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", uri)
    first = storage.local_dir(uri)
    rel = "patches/scene1/p002.npy"
    obj = next(p for p in (s3["cache"] / "objects").rglob("*") if p.is_file() and p.read_bytes() == files[rel])
    obj.chmod(0o644)
    rotten = bytearray(obj.read_bytes())
    rotten[100] ^= 0x01  # same size, one bit flipped
    obj.write_bytes(bytes(rotten))
    if how == "bit-rot":
        cache._verified.clear()  # a new process: nothing was hashed yet (bit rot keeps the file's mtime)
    again = storage.local_dir(uri)
    assert (again / rel).read_bytes() == files[rel]  # fetched again, not the rotten copy
    assert all((again / r).read_bytes() == data for r, data in files.items())
    assert storage.local_file(storage.join(uri, rel)).read_bytes() == files[rel]
    assert first == again  # the same cache folder, rebuilt from the good object


def test_remove_dir_uncommits_then_deletes_only_its_files(s3: dict[str, Any], tmp_path: Path) -> None:
    uri = storage.join(s3["root"], "resume", "it-1")
    _fake_dataset(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", uri)
    s3["client"].put_object(Bucket=BUCKET, Key=_key(uri) + "/not-ours.txt", Body=b"x")  # not in the manifest
    storage.remove_dir(uri)
    assert not storage.exists(uri)
    keys = [o["Key"] for o in s3["client"].list_objects_v2(Bucket=BUCKET, Prefix=_key(uri) + "/").get("Contents", [])]
    assert keys == [_key(uri) + "/not-ours.txt"]
    storage.remove_dir(uri)  # absent is fine
    with pytest.raises(StorageError, match="bucket root"):
        storage.remove_dir(f"s3://{BUCKET}")


def test_download_cache_is_capped_by_last_use(s3: dict[str, Any], tmp_path: Path) -> None:
    import time

    from .conftest import configure as configure_store

    configure_store(s3["proxy"].url, s3["cache"], cache_max_gb=20e-6)  # 20 kB: one fake dataset fits, two do not
    a, b = storage.join(s3["root"], "a"), storage.join(s3["root"], "b")
    files_a, files_b = _fake_dataset(tmp_path / "a"), _fake_dataset(tmp_path / "b")
    storage.upload_dir(tmp_path / "a", a)
    storage.upload_dir(tmp_path / "b", b)
    folder_a = storage.local_dir(a)

    def objects() -> list[Path]:
        return [p for p in (s3["cache"] / "objects").rglob("*") if p.is_file()]

    storage.local_dir(b)  # over the cap, but a was used a moment ago: another process may be reading it
    assert folder_a.is_dir() and len(objects()) == len(set(files_a.values()) | set(files_b.values()))
    old = time.time() - 7200
    for path in objects():
        if any(path.read_bytes() == data for data in files_a.values()) and path.stat().st_size:
            os.utime(path, (old, path.stat().st_mtime))  # a's files last used two hours ago
    storage.local_file(storage.join(b, "patches/scene0/p000.npy"))  # cached already: nothing downloaded, no pruning
    assert folder_a.is_dir()
    storage.write_bytes(storage.join(s3["root"], "c.bin"), b"c" * 100)
    storage.local_file(storage.join(s3["root"], "c.bin"))  # a download: the cache is pruned
    assert not folder_a.exists()  # its objects were evicted, so the folder built from them went too
    assert sum(p.stat().st_size for p in objects()) <= 20_000
    again = storage.local_dir(a)  # fetched again when needed
    assert all((again / rel).read_bytes() == data for rel, data in files_a.items())
    assert all((storage.local_dir(b) / rel).read_bytes() == data for rel, data in files_b.items())


def test_remote_lease_is_exclusive_renewed_and_taken_over_when_expired(s3: dict[str, Any]) -> None:
    import time

    from cdseg.storage.lease import LeaseHeld

    out = storage.join(s3["root"], "run", "step-0")
    with storage.remote_lease(out, ttl_s=1.5):
        time.sleep(2)  # past the first time to live: renewed meanwhile
        busy = rf"--output {out} is in use by another cdseg run \(host .+, pid {os.getpid()}"
        with pytest.raises(LeaseHeld, match=busy), storage.remote_lease(out):
            pass
    assert not storage.exists(storage.join(out, "_cdseg_lease.json"))
    storage.write_bytes(storage.join(out, "_cdseg_lease.json"),
                        json.dumps({"host": "gone", "pid": 1, "expires": time.time() - 5}).encode())
    with storage.remote_lease(out):  # a crashed holder: taken over
        info = json.loads(storage.read_bytes(storage.join(out, "_cdseg_lease.json")))
        assert info["pid"] == os.getpid()
