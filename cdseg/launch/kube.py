"""The Kubernetes client: credentials, API objects, and API errors translated into `LaunchError`s.

The only module (with `runner` and `logs`) that imports `kubernetes`; it is imported lazily so
that `cdseg.launch` (spec building, `--dry-run`) works without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cdseg.launch.errors import (
    INSTALL_OPERATOR,
    CRDNotInstalledError,
    ForbiddenError,
    KubeConfigError,
    LaunchError,
    NamespaceNotFoundError,
)
from cdseg.utils.lazy import lazy_import

#: every (resource, verb) the launcher calls; k8s/base/rbac.yaml grants exactly these (a test checks it)
REQUIRED_PERMISSIONS: dict[str, frozenset[str]] = {
    "kubeflow.org/pytorchjobs": frozenset({"create", "get", "watch", "delete"}),
    "pods": frozenset({"list"}),
    "pods/log": frozenset({"get"}),
}


def kubernetes() -> Any:
    """The `kubernetes` package, or a MissingDependencyError with the install command."""
    return lazy_import("kubernetes", "launching PyTorchJobs", "pip install 'kubernetes>=30,<31'")


@dataclass
class KubeApis:
    """The two API groups the launcher uses, sharing one ApiClient."""

    api_client: Any
    custom: Any   # CustomObjectsApi
    core: Any     # CoreV1Api

    @classmethod
    def from_api_client(cls, api_client: Any) -> KubeApis:
        """Wrap an existing `kubernetes.client.ApiClient` (tests pass one pointing at a fake server)."""
        k = kubernetes()
        return cls(api_client, k.client.CustomObjectsApi(api_client), k.client.CoreV1Api(api_client))

    @property
    def host(self) -> str:
        """The API server URL, for messages."""
        return str(getattr(self.api_client.configuration, "host", "?"))


def connect(kubeconfig: str | None = None, context: str | None = None, in_cluster: bool | None = None) -> KubeApis:
    """API clients from in-cluster credentials (inside a pod) or a kubeconfig file.

    `in_cluster=None` picks in-cluster when `KUBERNETES_SERVICE_HOST` is set and no kubeconfig was given.
    """
    k = kubernetes()
    if in_cluster is None:
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    configuration = k.client.Configuration()
    try:
        if in_cluster:
            k.config.load_incluster_config(client_configuration=configuration)
        else:
            k.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    except (k.config.ConfigException, OSError) as exc:
        where = "in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '~/.kube/config (or $KUBECONFIG)'}"
        raise KubeConfigError(f"cannot load Kubernetes credentials from the {where}: {exc}; pass --kubeconfig "
                              "FILE (and --context NAME), or run inside a pod with --in-cluster") from exc
    return KubeApis.from_api_client(k.client.ApiClient(configuration))


def status_body(exc: Any) -> dict[str, Any]:
    """The `Status` object of an ApiException (empty when the body is not JSON)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def api_message(exc: Any) -> str:
    """The API server's message for an ApiException, else its reason."""
    return str(status_body(exc).get("message") or exc.reason or "").strip()


def translate(exc: Any, *, verb: str, resource: str, namespace: str, name: str = "") -> LaunchError:
    """Turn an ApiException into the `LaunchError` that says what to do."""
    status = getattr(exc, "status", None)
    msg = api_message(exc)
    what = f"{resource} {name!r}" if name else resource
    if status in (401,):
        return KubeConfigError(f"the API server rejected the credentials ({msg}); refresh the kubeconfig or token")
    if status == 403:
        return ForbiddenError(
            f"RBAC forbids '{verb}' on {resource} in namespace {namespace!r} ({msg}); bind the Role of "
            f"k8s/base (kubectl apply -k k8s/base -n {namespace}) to the service account running the launcher, "
            "or ask a cluster admin to", verb=verb, resource=resource, namespace=namespace)
    if status == 404:
        details = status_body(exc).get("details") or {}
        if details.get("kind") == "namespaces" or f'namespaces "{namespace}" not found' in msg:
            return NamespaceNotFoundError(f"namespace {namespace!r} does not exist; create it (kubectl create namespace "
                                          f"{namespace}) or pass --namespace with an existing one")
        if resource.endswith("pytorchjobs") and not name:
            return CRDNotInstalledError(
                f"the API server at this context does not serve {resource} (404: {msg or 'not found'}): the Kubeflow "
                f"Training Operator v1 is not installed; install it with: {INSTALL_OPERATOR}")
    return LaunchError(f"Kubernetes API error on '{verb}' {what} in namespace {namespace!r}: {status} {msg}".strip())
