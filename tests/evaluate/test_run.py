"""`cdseg test` end to end on a hand-made scene, a stand-in model and card; bad input exits 2."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import nn

from cdseg.cli.main import main
from cdseg.data import prepared
from cdseg.data.isprs import POTSDAM
from cdseg.tasks import get_task as task_of

BANDS = ["R", "G", "B", "IR"]
CRS = "EPSG:32633"
TRANSFORM = Affine(0.05, 0.0, 366000.0, 0.0, -0.05, 5808000.0)


class FakeDataset:
    """The PreparedDataset surface evaluation uses: manifest, fingerprint, read_scene, georeference."""

    def __init__(self, scenes: dict[str, prepared.Scene]) -> None:
        self.scenes = scenes
        self.manifest = {**POTSDAM.manifest_fields(), "bands": BANDS, "splits": {"train": [], "test": sorted(scenes)}}
        self.fingerprint = "fake-dataset-1"

    def read_scene(self, scene_id: str, labels: str | None = None) -> prepared.Scene:
        assert labels is None, "a dataset with one label set is read as prepared"
        return self.scenes[scene_id]

    def check(self, *, full: bool = False) -> tuple[int, int]:
        return 0, 0  # nothing on disk to verify

    def georeference(self, scene_id: str) -> tuple[Any, Any]:
        scene = self.scenes[scene_id]
        return scene.crs, scene.transform


def make_scene(scene_id: str, h: int, w: int, seed: int) -> prepared.Scene:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 6, size=(h, w), dtype=np.uint8)
    label[:3, :] = 255  # an ignored strip
    image = rng.integers(0, 256, size=(4, h, w), dtype=np.uint8)
    image[0] = label * 40  # the red band carries the class, so a pointwise model can be right
    return prepared.Scene(scene_id, image, label, rasterio.crs.CRS.from_string(CRS), TRANSFORM)


def card(**over: Any) -> dict[str, Any]:
    base = {"task": "222a", "step": 1, "classes": [["impervious_surfaces", "low_vegetation"], ["building", "tree"]],
            "bands": BANDS, "method": "mib-cd", "sha256": "a" * 64}
    return base | over


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Stand-ins for PreparedDataset.open and cdseg.models.io.load_model, keyed by the URIs given."""
    datasets = {"ds": FakeDataset({"s1": make_scene("s1", 96, 80, 0), "s2": make_scene("s2", 70, 90, 1)}),
                "tiny": FakeDataset({"t": make_scene("t", 20, 24, 2)})}
    torch.manual_seed(0)
    model = nn.Conv2d(4, 5, 1)
    cards = {"ck": card(), "ck-other": card(sha256="b" * 64), "ck-classes": card(classes=[["building"], ["tree"]]),
             "ck-bands": card(bands=["R", "G", "B", "DSM"]), "ck-step0": card(step=0, classes=[["impervious_surfaces", "low_vegetation"]])}

    def open_(uri: str) -> FakeDataset:
        return datasets[Path(uri).name]

    def load_model(uri: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
        c = cards[Path(uri).name]
        return (model if c["step"] == 1 else nn.Conv2d(4, 3, 1)), c

    monkeypatch.setattr(prepared.PreparedDataset, "open", staticmethod(open_))
    fake_io = types.ModuleType("cdseg.models.io")
    fake_io.load_model = load_model  # type: ignore[attr-defined]
    fake_io.read_card = lambda uri: cards[Path(uri).name]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdseg.models.io", fake_io)
    return {"tmp": tmp_path, "datasets": datasets}


def args(tmp: Path, *extra: str, ck: str = "ck", ds: str = "ds") -> list[str]:
    return ["test", "--checkpoint", str(tmp / ck), "--dataset", str(tmp / ds), "--output", str(tmp / "run"),
            "--eval.window", "32", "--eval.overlap", "8", "--eval.previews", "1", *extra]


def test_whole_scene_evaluation_writes_every_output(world: dict[str, Any]) -> None:
    tmp = world["tmp"]
    assert main(args(tmp)) == 0
    out = tmp / "run" / "step-1" / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    cm = np.asarray(metrics["confusion_matrix"])
    labelled = sum(int((s.label != 255).sum()) for s in world["datasets"]["ds"].scenes.values())
    assert cm.sum() == labelled == metrics["pixels"]  # every labelled pixel counted exactly once
    assert metrics["classes"] == ["background", "impervious_surfaces", "low_vegetation", "building", "tree"]
    assert metrics["old_classes"] == ["impervious_surfaces", "low_vegetation"]
    assert metrics["new_classes"] == ["building", "tree"]
    assert metrics["background_in_averages"] is False and metrics["method"] == "mib-cd"
    assert metrics["checkpoint"]["sha256"] == "a" * 64
    # car and clutter are future classes at step 1: their pixels are background targets
    lut_bg = sum(int(np.isin(s.label, [4, 5]).sum()) for s in world["datasets"]["ds"].scenes.values())
    assert cm[0].sum() == lut_bg
    assert metrics["work"]["pixels_pushed"] == (4 * 3 + 3 * 4) * 32 * 32  # 96x80: 4x3 windows, 70x90: 3x4 (stride <= 24)
    for name in ("metrics.md", "confusion.png", "config.yaml", "previews/s1.png", "predictions/s1.tif", "predictions/s2.tif"):
        assert (out / name).is_file(), name
    assert not (out / "previews" / "s2.png").exists()
    with rasterio.open(out / "predictions" / "s2.tif") as src:
        assert src.crs == rasterio.crs.CRS.from_string(CRS) and src.transform == TRANSFORM
        assert src.shape == (70, 90) and src.dtypes[0] == "uint8"
        cmap = src.colormap(1)
        assert cmap[3] == (0, 0, 255, 255) and cmap[0] == (0, 0, 0, 255)  # building blue, background black
    # the written predictions are the ones scored: rebuild the confusion matrix from the GeoTIFFs
    lut = task_of("222a", POTSDAM.manifest_fields()).label_lut(1, "test")
    rebuilt = np.zeros((5, 5), dtype=np.int64)
    for sid, scene in world["datasets"]["ds"].scenes.items():
        with rasterio.open(out / "predictions" / f"{sid}.tif") as src:
            pred = src.read(1)
        target = lut[scene.label]
        keep = target != 255
        np.add.at(rebuilt, (target[keep], pred[keep]), 1)
    assert np.array_equal(rebuilt, cm)
    assert "| new |" in (out / "metrics.md").read_text()


def test_without_geotiffs_only_previews_are_written(world: dict[str, Any]) -> None:
    tmp = world["tmp"]
    assert main(args(tmp, "--no-eval.geotiff")) == 0  # 2 scenes, 1 preview: the other scene needs no prediction
    out = tmp / "run" / "step-1" / "eval"
    assert (out / "previews" / "s1.png").is_file() and not (out / "predictions").exists()
    assert (out / "metrics.json").is_file()


def test_same_evaluation_again_is_a_noop_and_a_different_one_is_refused(world: dict[str, Any]) -> None:
    tmp = world["tmp"]
    assert main(args(tmp)) == 0
    out = tmp / "run" / "step-1" / "eval" / "metrics.json"
    before = out.read_text()
    assert main(args(tmp)) == 0 and out.read_text() == before
    assert main(args(tmp, ck="ck-other")) == 2
    assert main(args(tmp, "--eval.tta")) == 2  # other options, same checkpoint
    assert out.read_text() == before
    assert main(args(tmp, "--overwrite", ck="ck-other")) == 0
    assert json.loads(out.read_text())["checkpoint"]["sha256"] == "b" * 64


@pytest.mark.parametrize(("extra", "kw"), [
    ((), {"ck": "ck-classes"}),
    ((), {"ck": "ck-bands"}),
    (("--scenes", "s1,nope"), {}),
    (("--eval.small-scene", "error"), {"ds": "tiny"}),
    (("--eval.overlap", "32"), {}),
    (("--eval.window", "48"), {}),
])
def test_bad_input_exits_2_and_writes_nothing(world: dict[str, Any], extra: tuple[str, ...], kw: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    tmp = world["tmp"]
    assert main(args(tmp, *extra, **kw)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp / "run" / "step-1" / "eval").exists()


def test_small_scene_is_padded_by_default(world: dict[str, Any]) -> None:
    tmp = world["tmp"]
    assert main(args(tmp, ds="tiny")) == 0
    metrics = json.loads((tmp / "run" / "step-1" / "eval" / "metrics.json").read_text())
    assert np.asarray(metrics["confusion_matrix"]).sum() == 17 * 24
    with rasterio.open(tmp / "run" / "step-1" / "eval" / "predictions" / "t.tif") as src:
        assert src.shape == (20, 24)


def test_step0_has_no_old_classes(world: dict[str, Any]) -> None:
    tmp = world["tmp"]
    assert main(args(tmp, ck="ck-step0")) == 0
    metrics = json.loads((tmp / "run" / "step-0" / "eval" / "metrics.json").read_text())
    assert metrics["mean"]["old"]["miou"] is None and metrics["mean"]["new"]["miou"] is not None


def test_on_a_real_prepared_dataset(prepared_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real PreparedDataset (2 generated test scenes of 256 px) with a stand-in model: georeference kept."""
    torch.manual_seed(0)
    fake_io = types.ModuleType("cdseg.models.io")
    fake_io.load_model = lambda uri, device="cpu": (nn.Conv2d(4, 5, 1), card())  # type: ignore[attr-defined]
    fake_io.read_card = lambda uri: card()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cdseg.models.io", fake_io)
    ds = prepared.PreparedDataset.open(str(prepared_dataset))
    assert main(["test", "--checkpoint", str(tmp_path / "ck"), "--dataset", str(prepared_dataset), "--output",
                 str(tmp_path / "run"), "--eval.window", "128", "--eval.overlap", "32", "--eval.tta"]) == 0
    out = tmp_path / "run" / "step-1" / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    test_ids = ds.scenes("test")
    assert metrics["dataset"]["scenes"] == test_ids
    assert metrics["dataset"]["labels"] == "eroded"  # the release has them: scored as the ISPRS benchmark does
    scenes = [ds.read_scene(s, "eroded") for s in test_ids]
    assert np.asarray(metrics["confusion_matrix"]).sum() == sum(int((s.label != 255).sum()) for s in scenes)
    assert metrics["work"]["pixels_pushed"] == 8 * len(test_ids) * 9 * 128 * 128  # 256 px: 3x3 windows, TTA 8x
    for scene in scenes:
        with rasterio.open(out / "predictions" / f"{scene.id}.tif") as src:
            assert src.crs == scene.crs and src.transform == scene.transform and src.shape == scene.label.shape
            assert len(src.colormap(1)) >= 5


def test_real_checkpoint_on_a_real_prepared_dataset(prepared_dataset: Path, tmp_path: Path) -> None:
    """No stand-ins: a cdseg segmenter saved with save_model, evaluated by `cdseg test`; a band mismatch exits 2."""
    from cdseg.models import ModelConfig, build_segmenter
    from cdseg.models.io import save_model

    task = task_of("6s", POTSDAM.manifest_fields())
    torch.manual_seed(0)
    model = build_segmenter(ModelConfig(encoder="resnet18", pretrained=False, norm="bn", decoder_channels=[32, 16, 16, 16]),
                            task.heads(1), BANDS)
    ck = save_model(model.eval(), str(tmp_path / "ck"), {"task": "6s", "step": 1, "classes": [["building"], ["tree"]],
                                                         "class_names": task.class_names(1), "method": "ft"})
    rc = main(["test", "--checkpoint", ck, "--dataset", str(prepared_dataset), "--output", str(tmp_path / "run"),
               "--eval.window", "128", "--eval.overlap", "32", "--eval.previews", "1"])
    assert rc == 0
    metrics = json.loads((tmp_path / "run" / "step-1" / "eval" / "metrics.json").read_text())
    assert metrics["classes"] == ["background", "building", "tree"] and metrics["method"] == "ft"
    assert len(metrics["checkpoint"]["sha256"]) == 64
    rgb = save_model(build_segmenter(ModelConfig(encoder="resnet18", pretrained=False, norm="bn",
                                                 decoder_channels=[32, 16, 16, 16]), task.heads(1), ["R", "G", "B", "DSM"]),
                     str(tmp_path / "ck-dsm"), {"task": "6s", "step": 1, "classes": [["building"], ["tree"]], "method": "ft"})
    assert main(["test", "--checkpoint", rgb, "--dataset", str(prepared_dataset), "--output", str(tmp_path / "run2")]) == 2
    assert not (tmp_path / "run2").exists()


def test_headline_numbers_are_pushed_to_a_pushgateway(world: dict[str, Any]) -> None:
    """A stand-in Pushgateway on loopback receives old/new/all mIoU under the job's grouping key."""
    import http.server
    import threading

    received: list[tuple[str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        do_POST = do_PUT  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tmp = world["tmp"]
        assert main(args(tmp, "--metrics.pushgateway", f"http://127.0.0.1:{server.server_port}")) == 0
    finally:
        server.shutdown()
    assert len(received) == 1
    path, body = received[0]
    assert path.startswith("/metrics/job/cdseg-test/") and "/step/1" in path
    text = body.decode()
    assert 'cdseg_eval_miou_ratio{' in text and 'subset="new"' in text and 'method="mib-cd"' in text


@pytest.fixture
def s3_root(s3_server: str) -> tuple[str, str]:
    """A bucket on moto's S3 server on loopback (real HTTP, real boto3): (root URI, endpoint)."""
    from conftest import make_bucket

    make_bucket(s3_server, "evals")
    return "s3://evals/runs", s3_server


def test_evaluation_and_report_on_s3(world: dict[str, Any], s3_root: tuple[str, str]) -> None:
    """cdseg test writes its folder to s3:// (committed with a manifest); cdseg report finds it under a root."""
    from cdseg import storage

    root, endpoint = s3_root
    tmp = world["tmp"]
    base = ["--checkpoint", str(tmp / "ck"), "--dataset", str(tmp / "ds"), "--eval.window", "32", "--eval.overlap", "8",
            "--eval.previews", "0", "--storage.endpoint-url", endpoint]
    assert main(["test", *base, "--output", f"{root}/mib"]) == 0
    assert storage.exists(f"{root}/mib/step-1/eval/metrics.json")
    assert main(["test", *base, "--output", f"{root}/mib"]) == 0  # the same evaluation: a no-op
    assert main(["test", *base, "--eval.blend", "uniform", "--output", f"{root}/mib"]) == 2
    assert main(["report", "--inputs", root, "--output", f"{root}/report", "--storage.endpoint-url", endpoint]) == 0
    assert "mib-cd" in storage.read_text(f"{root}/report/report.md")
