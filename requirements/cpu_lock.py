"""Derive the CPU image's lock from requirements/runtime.lock (run by `make lock`; checked by tests).

runtime.lock holds the CUDA build of torch and what only that build needs (triton, nvidia-*, cuda-*).
The CPU image installs everything else from `runtime-cpu.lock` (same versions, same hashes) and the CPU
builds of the same torch / torchvision versions from `torch-cpu.txt`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: packages that only the CUDA build of torch needs
CUDA_ONLY = re.compile(r"^(triton|nvidia-.*|cuda-.*)$")
#: replaced by their CPU builds (torch-cpu.txt), not dropped: what they need stays
REPLACED = ("torch", "torchvision")


def parse_blocks(text: str) -> tuple[str, dict[str, str]]:
    """The lock's header and one text block per package (`name==version`, hashes, `# via` lines)."""
    header, blocks, name = [], {}, None
    for line in text.splitlines(keepends=True):
        match = re.match(r"^([A-Za-z0-9_.\-]+)==", line)
        if match:
            name = match.group(1).lower()
            blocks[name] = line
        elif name is None:
            header.append(line)
        elif line.startswith("# The following packages"):
            name = "__unsafe_note__"
            blocks[name] = line
        else:
            blocks[name] += line
    return "".join(header), blocks


def vias(block: str) -> set[str]:
    """The packages a block's `# via` annotation names (`-r`/`-c` files and the project stand for a user)."""
    names: set[str] = set()
    lines = block.splitlines()
    for i, line in enumerate(lines):
        text = line.strip()
        if text.startswith("# via"):
            rest = text[len("# via"):].strip()
            items = [rest] if rest else [x.strip().lstrip("#").strip() for x in lines[i + 1:] if x.strip().startswith("#")]
            for item in items:
                names.add(item.split()[0].lower() if item else "")
            break
    return {n for n in names if n}


def version_of(block: str) -> str:
    return block.split("==", 1)[1].split()[0]


def cpu_lock(runtime_text: str) -> tuple[str, str]:
    """(runtime-cpu.lock, torch-cpu.txt) for a runtime.lock text."""
    header, blocks = parse_blocks(runtime_text)
    dropped = {n for n in blocks if CUDA_ONLY.match(n)}
    changed = True
    while changed:  # a package wanted only by dropped ones goes too
        changed = False
        for name, block in blocks.items():
            wanted = vias(block)
            if name not in dropped and name != "__unsafe_note__" and wanted and wanted <= dropped:
                dropped.add(name)
                changed = True
    kept = [b for n, b in blocks.items() if n not in dropped and n not in REPLACED and n != "__unsafe_note__"]
    note = ("# The CPU image's lock: runtime.lock without torch/torchvision (their CPU builds are in\n"
            "# torch-cpu.txt) and without what only the CUDA build needs. Written by `make lock`.\n")
    torch_cpu = ("# CPU builds of runtime.lock's torch and torchvision for docker/Dockerfile.cpu, installed from\n"
                 "# PyTorch's CPU wheel index (TORCH_INDEX). Pinned by version: the lock is made on a machine\n"
                 "# that does not reach that index, so it holds no hashes for them. Written by `make lock`.\n"
                 + "".join(f"{n}=={version_of(blocks[n])}+cpu\n" for n in REPLACED))
    return header + note + "".join(kept), torch_cpu


def main() -> int:
    runtime = (HERE / "runtime.lock").read_text()
    lock, torch_cpu = cpu_lock(runtime)
    (HERE / "runtime-cpu.lock").write_text(lock)
    (HERE / "torch-cpu.txt").write_text(torch_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
