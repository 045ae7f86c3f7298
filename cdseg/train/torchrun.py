"""`python -m cdseg.train.torchrun ARGS`: `torchrun ARGS`, exiting with the code that says whether to retry.

torchrun exits 1 whatever its ranks exited with, so a job's `ExitCode` restart policy (which retries
128-255 only) would take a rank's storage outage (`cdseg.errors.EXIT_RETRYABLE`) or a rank killed
by the kernel for a permanent failure. This runs torchrun unchanged (same arguments, the same
`PET_*` environment that PyTorchJob and TrainJob set) and exits with `EXIT_RETRYABLE` when a rank
did, with 128 + N when a rank was killed by signal N, else with the first failed rank's code.
"""

from __future__ import annotations

import sys

from cdseg.errors import EXIT_RETRYABLE


def exit_code(rank_codes: list[int]) -> int:
    """The launcher's exit code for the failed ranks' exit codes (negative: killed by that signal)."""
    if EXIT_RETRYABLE in rank_codes:
        return EXIT_RETRYABLE
    for code in rank_codes:
        if code < 0:
            return 128 + (-code)
    return next((c for c in rank_codes if 0 < c < 256), 1)


def main(argv: list[str] | None = None) -> int:
    """Run torchrun with `argv`; 0 when every rank succeeded, else `exit_code` of the failed ranks."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        ranks = sorted(exc.failures)  # first failure first: its code is the one reported
        first, _ = exc.get_first_failure()
        codes = [exc.failures[first].exitcode] + [exc.failures[r].exitcode for r in ranks if r != first]
        code = exit_code(codes)
        sys.stderr.write(f"cdseg.train.torchrun: rank(s) {ranks} failed with exit code(s) {codes}; exiting {code}\n")
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
