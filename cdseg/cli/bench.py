"""`cdseg bench ...`: one entry per benchmark, each defined in `cdseg/bench/<area>.py`."""

from __future__ import annotations

from cdseg.bench.ddp import BenchDdpConfig
from cdseg.bench.ddp import run_and_print as run_ddp_and_print
from cdseg.bench.eval import BenchEvalConfig
from cdseg.bench.eval import run_and_print as run_eval_and_print
from cdseg.bench.gpu import BenchGpuConfig
from cdseg.bench.gpu import run_and_print as run_gpu_and_print
from cdseg.bench.prepare import BenchPrepareConfig, run_and_print
from cdseg.bench.storage import BenchStorageConfig
from cdseg.bench.storage import run_and_print as run_storage_and_print
from cdseg.bench.train import BenchTrainConfig
from cdseg.bench.train import run_and_print as run_train_and_print
from cdseg.cli.command import Command

COMMANDS: dict[str, Command] = {
    "bench prepare": Command(
        name="bench prepare",
        help="benchmark prepare against its CPU bound and gdal_translate",
        config=BenchPrepareConfig,
        run=run_and_print,
        description="Generate full-size scenes, then time cdseg prepare, a plain file copy of the same bytes and "
        "gdal_translate writing the same tiled layout (Debian's gdal-bin; skipped without it), interleaved round "
        "by round, for each worker count. Reports prepare's scheduling efficiency against its own CPU bound "
        "(target >= 0.9), prepare / gdal_translate time (target <= 1.5), the augmented training Dataset's "
        "patches/s and random patch reads per on-disk format. Prints a table and writes JSON.",
    ),
    "bench eval": Command(
        name="bench eval",
        help="benchmark full-scene inference",
        config=BenchEvalConfig,
        run=run_eval_and_print,
        description="Predict a generated scene with an untrained model, interleaved round by round: the "
        "logits-only path evaluation uses, the full forward (decoder features too) and 8x D4 TTA. Megapixels per "
        "second, pixels pushed through the network (counted at the model's input) against the scene and against "
        "the minimum the window and overlap allow, the TTA work ratio, and the peak memory of one window batch "
        "against its logits (target <= 3x).",
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
        help="benchmark step time and FLOPs of every method against ft",
        config=BenchTrainConfig,
        run=run_train_and_print,
        description="Time one training step (forward, backward, optimizer; frozen teacher included) of every method "
        "(--methods; default all but joint) at an incremental step on the same model and batch; step time and FLOPs "
        "against ft in the same run (targets mib/ft <= 1.4, mib-cd/ft <= 2.5 in time, plop/ft <= 1.5 in FLOPs, "
        "ewc, pi, rw / ft <= 1.1), images/s, peak memory and achieved FLOP/s against the device's dense peak on GPU.",
    ),
    "bench ddp": Command(
        name="bench ddp",
        help="benchmark DDP steps against plain steps (run under torchrun)",
        config=BenchDdpConfig,
        run=run_ddp_and_print,
        description="Under torchrun, every rank times ft steps of the segmenter with DDP (gradient all-reduce) "
        "interleaved with the same steps without DDP; rank 0 prints the slowest rank's medians and the ratio. "
        "--device cuda:0 puts every rank on one GPU (NCCL may refuse; the error is then the finding).",
    ),
    "bench gpu": Command(
        name="bench gpu",
        help="the one GPU check: every bench with the paper's model, within a time budget",
        config=BenchGpuConfig,
        run=run_gpu_and_print,
        description="Runs, each in its own process and time share: environment; inplace-abn's CUDA kernels (built "
        "from --inplace-abn-src when missing, nothing fetched); bench train with tresnet_m at 512 px, batch 8, bf16, "
        "channels_last (ft, mib, mib-cd; BN and iABN; the loader in the same rounds); bench train --compile both; "
        "bench ddp with 2 processes on one GPU; bench eval on a 6000 px scene with and without TTA. Prints each "
        "figure against its target. Without CUDA it runs with CPU-sized settings (--profile cpu or tiny).",
    ),
}
