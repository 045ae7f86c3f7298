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


def test_iabn_script_matches_pyproject_and_makefile(tmp_path: Path) -> None:
    version = _iabn_pin()
    lines = _run_script(tmp_path, str(tmp_path / "wheels"))
    args = [line for line in lines if line.startswith("ARGS")]
    assert args[0].endswith("build-requirements.txt") and "install --no-cache-dir -r" in args[0]
    assert "--no-build-isolation" in args[1] and f"inplace-abn=={version}" in args[1] and "--wheel-dir" in args[1]
    assert f"SETUPTOOLS_SCM_PRETEND_VERSION={version}" in lines[-1]
    assert "FORCE_CPU=1" in lines[-1] or os.path.exists("/usr/local/cuda/bin/nvcc")
    makefile = (ROOT / "Makefile").read_text()
    # `make iabn` runs the very same script as the images: one recipe
    assert "sh docker/install-iabn.sh" in makefile
    # the build tools the Makefile installs first are the ones the images pin
    pinned = {re.split(r"[=<>]", line)[0].lower().replace("_", "-")
              for line in (ROOT / "docker/build-requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    make_tools = re.search(r"install --quiet --upgrade pip (.+)", makefile)
    assert make_tools and {t.replace("_", "-") for t in make_tools.group(1).split()} == pinned


def test_iabn_script_builds_cuda_kernels_when_nvcc_exists(tmp_path: Path) -> None:
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    (cuda / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (cuda / "bin" / "nvcc").chmod(0o755)
    lines = _run_script(tmp_path, cuda_home=str(cuda))
    assert "FORCE_CPU= " in lines[-1] and f"CUDA_HOME={cuda}" in lines[-1]
    assert "install --no-cache-dir --no-build-isolation inplace-abn==" in lines[-2]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_is_non_root_labelled_and_complete(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] == str(JobSpec(run="r", step=0, image="i").run_as_user), (
        "the image's user is the uid the pods run as (numeric, so runAsNonRoot can verify it)")
    for label in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert "--no-build-isolation" not in text, "inplace-abn is built only through docker/install-iabn.sh"
    assert "install-iabn.sh" in text and "import cdseg, kfp, inplace_abn" in text
    copied = set(re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M))
    sources = {s for line in copied for s in line.split()}
    for package in ("cdseg/", "components/", "pipelines/", "pyproject.toml", "README.md"):
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
    tags = {f: re.search(r"docker build -f \S+ -t (\S+) \.", (ROOT / f).read_text()).group(1)  # type: ignore[union-attr]
            for f in DOCKERFILES}
    kind = yaml.safe_load((ROOT / "k8s/overlays/kind/launch.yaml").read_text())
    gpu = yaml.safe_load((ROOT / "k8s/overlays/gpu/launch.yaml").read_text())
    assert kind["image"] == tags["docker/Dockerfile.cpu"] and gpu["image"] == tags["docker/Dockerfile"]
