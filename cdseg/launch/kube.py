"""The Kubernetes client: credentials, API objects, and API errors translated into `LaunchError`s.

The only module (with `runner` and `logs`) that imports `kubernetes`; it is imported lazily so
that `cdseg.launch` (spec building, `--dry-run`) works without it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cdseg.launch.backend import JobBackend, all_backends, permissions
from cdseg.launch.errors import (
    CRDNotInstalledError,
    ForbiddenError,
    KubeConfigError,
    LaunchError,
    NamespaceNotFoundError,
)
from cdseg.utils.lazy import lazy_import

#: what the launcher calls besides its backend's resource: following pods, reading the leader's log, and the
#: job's train-config ConfigMap (create; patch: rewrite one an earlier attempt left, make the job its owner;
#: delete; list a run's)
POD_PERMISSIONS: dict[str, frozenset[str]] = {
    "pods": frozenset({"list"}), "pods/log": frozenset({"get"}),
    "configmaps": frozenset({"create", "patch", "delete", "list"}),
}


def required_permissions(backends: list[JobBackend] | None = None) -> dict[str, frozenset[str]]:
    """Every (resource, verbs) the launcher calls with these backends (default: all of them)."""
    out = dict(POD_PERMISSIONS)
    for backend in backends if backends is not None else all_backends():
        out.update(permissions(backend))
    return out


#: every (resource, verb) the launcher calls, for both backends; k8s/base/rbac.yaml grants exactly these
REQUIRED_PERMISSIONS: dict[str, frozenset[str]] = required_permissions()


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


def served(apis: KubeApis, backend: JobBackend) -> bool:
    """Whether the API server serves the backend's resource (API discovery; needs no RBAC beyond login)."""
    k = kubernetes()
    path = f"/apis/{backend.group}/{backend.version}"
    try:
        found = apis.api_client.call_api(path, "GET", auth_settings=["BearerToken"], response_type="object",
                                         _return_http_data_only=True, _request_timeout=(10, 30))
    except k.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise translate(exc, verb="get", resource=path, namespace="(discovery)") from exc
    except OSError as exc:
        raise KubeConfigError(f"cannot reach the Kubernetes API server at {apis.host} ({exc}); check "
                              "--kubeconfig/--context, or the network") from exc
    return any(r.get("name") == backend.plural for r in (found or {}).get("resources") or [])


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


def translate(exc: Any, *, verb: str, resource: str, namespace: str, name: str = "",
              backend: JobBackend | None = None) -> LaunchError:
    """Turn an ApiException into the `LaunchError` that says what to do (`backend`: whose resource it is)."""
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
        if backend is not None and resource == f"{backend.group}/{backend.plural}" and not name:
            return CRDNotInstalledError(
                f"the API server at this context does not serve {resource} (404: {msg or 'not found'}): "
                f"{backend.install_hint} (or pass --backend auto to use whichever kind the cluster serves)")
    hint = _HINTS.get(status or 0, "check the request and the cluster (kubectl describe; --debug shows the traceback)")
    return LaunchError(f"Kubernetes API error on '{verb}' {what} in namespace {namespace!r}: {status} "
                       f"{msg or getattr(exc, 'reason', '') or ''}".rstrip() + f"; {hint}")


_HINTS = {
    400: "the object was rejected as malformed; report it with --debug output",
    409: "another object is in the way; delete it or use another run name",
    422: "the object was rejected as invalid (an admission policy or an older CRD version?); check the message",
    429: "the API server kept throttling requests; retry later",
    500: "the API server or an admission webhook failed; check `kubectl get --raw /readyz` and the webhooks' pods",
    502: "the API server was unavailable; retry when `kubectl get --raw /readyz` says ok",
    503: "the API server was unavailable; retry when `kubectl get --raw /readyz` says ok",
    504: "the API server timed out; retry when `kubectl get --raw /readyz` says ok",
}
