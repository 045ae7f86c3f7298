"""The container images: hadolint-clean Dockerfiles, and their build recipe kept in step with the
Makefile and pyproject (there is no Docker engine here, so the recipe is exercised piecewise)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cdseg.launch import JobSpec

from .schemas import ROOT, tool

DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.cpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_clean(dockerfile: str) -> None:
    out = subprocess.run([tool("hadolint"), "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def _fake_pip(tmp_path: Path) -> Path:
    log = tmp_path / "pip.log"
    pip = tmp_path / "pip"
    pip.write_text("#!/bin/sh\n"
                   f'echo "ARGS $*" >> {log}\n'
                   f'echo "ENV SETUPTOOLS_SCM_PRETEND_VERSION=${{SETUPTOOLS_SCM_PRETEND_VERSION:-}} '
                   f'FORCE_CPU=${{FORCE_CPU:-}} CUDA_HOME=${{CUDA_HOME:-}}" >> {log}\n')
    pip.chmod(0o755)
    return pip


def _run_script(tmp_path: Path, *args: str, cuda_home: str = "") -> list[str]:
    pip = _fake_pip(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "FORCE_CPU", "TORCH_CUDA_ARCH_LIST")}
    env.update(PIP=str(pip), CUDA_HOME=cuda_home)
    subprocess.run(["sh", str(ROOT / "docker/install-iabn.sh"), *args], env=env, check=True, capture_output=True)
    return (tmp_path / "pip.log").read_text().splitlines()


def _iabn_pin() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'iabn\s*=\s*\["inplace-abn==([0-9.]+)"\]', text)
    assert match, "pyproject.toml's iabn extra pins inplace-abn"
    return match.group(1)


def test_iabn_script_installs_from_the_lock(tmp_path: Path) -> None:
    version = _iabn_pin()
    lines = _run_script(tmp_path, str(tmp_path / "wheels"))
    args = [line for line in lines if line.startswith("ARGS")]
    # first the locked build tools, then the sdist whose hash the lock holds, against the installed torch
    assert args[0].endswith("requirements/build.lock") and "--require-hashes" in args[0]
    assert "--no-build-isolation" in args[1] and "--require-hashes" in args[1] and "--wheel-dir" in args[1]
    assert args[1].endswith("requirements/iabn.lock")
    assert f"inplace-abn=={version}" in (ROOT / "requirements/iabn.lock").read_text()
    assert f"SETUPTOOLS_SCM_PRETEND_VERSION={version}" in lines[-1]
    assert "FORCE_CPU=1" in lines[-1] or os.path.exists("/usr/local/cuda/bin/nvcc")
    # `make iabn` runs the very same script as the images: one recipe
    assert "sh docker/install-iabn.sh" in (ROOT / "Makefile").read_text()


def test_iabn_script_builds_cuda_kernels_when_nvcc_exists(tmp_path: Path) -> None:
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (cuda / "bin" / "nvcc").chmod(0o755)
    lines = _run_script(tmp_path, cuda_home=str(cuda))
    assert "FORCE_CPU= " in lines[-1] and f"CUDA_HOME={cuda}" in lines[-1]
    assert "install --no-cache-dir --no-build-isolation --no-deps --require-hashes -r" in lines[-2]


def test_gpu_image_builds_kernels_for_t4_to_h100_and_ptx() -> None:
    text = (ROOT / "docker/Dockerfile").read_text()
    arch = re.search(r'^ARG TORCH_CUDA_ARCH_LIST="([^"]+)"', text, flags=re.M)
    assert arch and arch.group(1).split(";") == ["7.5", "8.0", "8.6", "8.9", "9.0+PTX"]
    script = (ROOT / "docker/install-iabn.sh").read_text()
    assert 'TORCH_CUDA_ARCH_LIST:-7.5;8.0;8.6;8.9;9.0+PTX' in script, "the script's default is the image's list"


@pytest.mark.parametrize(("dockerfile", "lock"), [("docker/Dockerfile", "runtime.lock"),
                                                  ("docker/Dockerfile.cpu", "runtime-cpu.lock")])
def test_images_install_from_the_lock(dockerfile: str, lock: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert "COPY requirements/ requirements/" in text
    assert re.search(rf"pip install --require-hashes --no-deps -r requirements/{lock}\b", text)
    # cdseg itself without resolving anything, then a consistency check of the whole environment
    assert "pip install --no-deps --no-build-isolation ." in text and "pip check" in text
    # no unpinned install anywhere: every pip install names a lock, the CPU torch pins or the project
    for line in re.findall(r"pip install [^\n\\&]+", text):
        assert re.search(r"-r requirements/|--no-deps --no-build-isolation \.", line), line


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_final_stage_copies_only_the_environment(dockerfile: str) -> None:
    stages = re.split(r"^FROM ", (ROOT / dockerfile).read_text(), flags=re.M)[1:]
    assert len(stages) == 2 and " AS build" in stages[0].splitlines()[0]
    final = stages[1]
    assert re.findall(r"^COPY .*", final, flags=re.M) == ["COPY --from=build /opt/venv /opt/venv"]
    assert "pip install" not in final and "/wheels" not in final


def test_cpu_image_takes_cpu_torch_builds_of_the_locked_versions() -> None:
    text = (ROOT / "docker/Dockerfile.cpu").read_text()
    assert '--index-url "${TORCH_INDEX}" -r requirements/torch-cpu.txt' in text
    assert "assert not torch.version.cuda" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_is_non_root_labelled_and_complete(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] == str(JobSpec(run="r", step=0, image="i").run_as_user), (
        "the image's user is the uid the pods run as (numeric, so runAsNonRoot can verify it)")
    for label in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    instructions = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "inplace-abn" not in instructions, "inplace-abn is built only through docker/install-iabn.sh"
    assert "install-iabn.sh" in text and "import cdseg, kfp, inplace_abn" in text
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M))
    sources = {s for line in copied for s in line.split()}
    for package in ("cdseg/", "components/", "pipelines/", "pyproject.toml", "README.md", "LICENSE"):
        assert package in sources


def test_dockerignore_keeps_what_the_images_copy() -> None:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert {".git", ".venv", "tests"} <= set(patterns)
    copied = {s for f in DOCKERFILES for line in re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / f).read_text(), re.M)
              for s in line.split()}
    for path in copied:
        top = path.rstrip("/").split("/")[0]
        assert top not in patterns and path.rstrip("/") not in patterns, f"{path} is copied but .dockerignore drops it"


def test_overlays_use_the_images_built_here() -> None:
    tags = {f: re.search(r"docker build -f \S+ .*?-t (\S+) \.", (ROOT / f).read_text()).group(1)  # type: ignore[union-attr]
            for f in DOCKERFILES}
    kind = yaml.safe_load((ROOT / "k8s/overlays/kind/launch.yaml").read_text())
    gpu = yaml.safe_load((ROOT / "k8s/overlays/gpu/launch.yaml").read_text())
    assert kind["image"] == tags["docker/Dockerfile.cpu"] and gpu["image"] == tags["docker/Dockerfile"]
