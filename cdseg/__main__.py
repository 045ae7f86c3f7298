"""`python -m cdseg` (also what torchrun runs: `torchrun -m cdseg train ...`)."""

from cdseg.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
