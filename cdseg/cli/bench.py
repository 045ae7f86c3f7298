"""`cdseg bench ...`: one entry per benchmark, each defined in `cdseg/bench/<area>.py`."""

from __future__ import annotations

from cdseg.bench.eval import BenchEvalConfig
from cdseg.bench.eval import run_and_print as run_eval_and_print
from cdseg.bench.prepare import BenchPrepareConfig, run_and_print
from cdseg.bench.storage import BenchStorageConfig
from cdseg.bench.storage import run_and_print as run_storage_and_print
from cdseg.bench.train import BenchTrainConfig
from cdseg.bench.train import run_and_print as run_train_and_print
from cdseg.cli.command import Command

COMMANDS: dict[str, Command] = {
    "bench prepare": Command(
        name="bench prepare",
        help="benchmark prepare throughput against a file-copy ceiling",
        config=BenchPrepareConfig,
        run=run_and_print,
        description="Generate full-size scenes, then time cdseg prepare with 1 and 2 workers against reading the "
        "same input bytes and writing the same output bytes with plain file copies, and time the augmented "
        "training Dataset. Prints a table and writes JSON.",
    ),
    "bench eval": Command(
        name="bench eval",
        help="benchmark full-scene inference",
        config=BenchEvalConfig,
        run=run_eval_and_print,
        description="Predict a generated scene with an untrained model, with and without 8x D4 TTA: megapixels "
        "per second, pixels pushed through the network (counted at the model's input) against the scene and "
        "against the minimum the window and overlap allow, and the TTA work ratio.",
    ),
    "bench storage": Command(
        name="bench storage",
        help="benchmark the storage layer against plain boto3",
        config=BenchStorageConfig,
        run=run_storage_and_print,
        description="Upload and download a checkpoint-sized object (default 500 MB) through cdseg.storage "
        "(streamed sha256, manifest written last, verified download cache) and with plain boto3 "
        "(upload_file / download_file, same TransferConfig), alternately, against a moto S3 server on loopback "
        "(or --endpoint-url). Prints MB/s and the ratio boto3 time / layer time (target >= 0.9); writes JSON.",
    ),
    "bench train": Command(
        name="bench train",
        help="benchmark step time of ft / mib / mib-cd",
        config=BenchTrainConfig,
        run=run_train_and_print,
        description="Time one training step (forward, backward, optimizer; frozen teacher included) of ft, mib and "
        "mib-cd at an incremental step on the same model and batch; ratios against ft (targets mib/ft <= 1.4, "
        "mib-cd/ft <= 2.5), images/s, peak memory and achieved FLOP/s against the device's dense peak on GPU.",
    ),
}
