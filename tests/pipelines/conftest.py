"""Make `import pipelines` / `import components` find the project's packages.

This folder has no `__init__.py` (one would make it a package named like the project's own), so
pytest puts it on sys.path as a plain folder; a folder named `pipelines`/`components` on sys.path
would then shadow the project's package as an empty namespace package unless the project root is
on sys.path too (where `python -m pytest` puts it, but the `pytest` script does not).
"""

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.append(ROOT)
