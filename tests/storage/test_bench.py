"""`cdseg bench storage` runs end to end on a tiny object (the real figures come from a manual 500 MB run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdseg.bench.storage import BenchStorageConfig, format_table, run_bench_storage


def test_bench_storage_small(aws_env: None, moto_endpoint: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_bench_storage(BenchStorageConfig(size_mb=2, endpoint_url=moto_endpoint, output=str(out),
                                                  work_dir=str(tmp_path / "work")))
    assert json.loads(out.read_text())["size_bytes"] == 2_000_000
    for key in ("ratio_upload", "ratio_download"):
        assert result[key] > 0
    assert "upload" in format_table(result) and "download" in format_table(result)


def test_bench_rejects_a_bad_endpoint(tmp_path: Path) -> None:
    from cdseg.errors import UserError

    with pytest.raises(UserError, match="endpoint"):
        run_bench_storage(BenchStorageConfig(size_mb=1, endpoint_url="minio:9000", output=str(tmp_path / "b.json"),
                                             work_dir=str(tmp_path / "w")))


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cdseg.cli.main import main

    rc = main(["bench", "storage", "--size-mb", "1", "--endpoint-url", "minio:9000",
               "--work-dir", str(tmp_path / "w"), "--output", str(tmp_path / "b.json")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "minio:9000" in err[0]


def test_bench_storage_interleaves_sides_round_by_round(aws_env: None, moto_endpoint: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import cdseg.bench.storage as bench_storage
    from cdseg.bench.timing import interleave

    seen: list[tuple[int, str]] = []

    def spy(variants, rounds, **kw):  # noqa: ANN001, ANN003, ANN202
        t = interleave(variants, rounds, **kw)
        seen.extend(t.order)
        return t

    monkeypatch.setattr(bench_storage, "interleave", spy)
    result = run_bench_storage(BenchStorageConfig(size_mb=1, repeats=2, endpoint_url=moto_endpoint,
                                                  output=str(tmp_path / "b.json"), work_dir=str(tmp_path / "work")))
    assert seen == [(0, "boto3_upload"), (0, "layer_upload"), (0, "boto3_download"), (0, "layer_download"),
                    (1, "layer_upload"), (1, "boto3_upload"), (1, "layer_download"), (1, "boto3_download")]
    assert result["ratio_upload_rounds"]["rounds"] == 2 and len(result["cpu_seconds"]["layer_download"]) == 2
