"""Submit a compiled pipeline to a Kubeflow Pipelines endpoint (`cdseg pipeline submit`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Submitted:
    """What the endpoint answered: the run's id and, when the endpoint says, its UI address."""

    run_id: str
    url: str | None = None


def submit(package: str | Path, *, host: str, arguments: dict[str, Any], experiment: str, run_name: str,
           namespace: str | None = None, enable_caching: bool | None = None, existing_token: str | None = None,
           wait_s: int = 0, client: Any = None) -> Submitted:
    """Create a run of the compiled `package` on the KFP endpoint `host` (and wait for it when `wait_s` > 0)."""
    from cdseg.errors import UserError

    if client is None:
        import kfp

        try:
            client = kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=existing_token)
        except Exception as exc:  # the SDK raises many kinds; all mean "cannot talk to the endpoint"
            raise UserError(f"cannot reach the Kubeflow Pipelines endpoint {host} ({type(exc).__name__}: {exc}); "
                            f"check --host (e.g. http://localhost:8080 after kubectl port-forward "
                            f"svc/ml-pipeline-ui 8080:80 -n kubeflow)") from exc
    result = client.create_run_from_pipeline_package(
        str(package), arguments=arguments, run_name=run_name, experiment_name=experiment,
        namespace=namespace, enable_caching=enable_caching)
    run_id = str(result.run_id)
    url = None
    ui = getattr(client, "_get_url_prefix", None)
    if callable(ui):
        try:
            url = f"{ui()}/#/runs/details/{run_id}"
        except Exception:  # the UI address is a nicety
            url = None
    if wait_s > 0:
        run = client.wait_for_run_completion(run_id, timeout=wait_s)
        state = getattr(getattr(run, "state", None), "value", None) or str(getattr(run, "state", ""))
        if "SUCCEEDED" not in state.upper():
            raise RuntimeError(f"run {run_id} ended {state}")
    return Submitted(run_id=run_id, url=url)


def kfp_cli_equivalent(package: str | Path, *, host: str, arguments: dict[str, Any], experiment: str,
                       run_name: str) -> str:
    """The plain `kfp run create` command line doing the same (printed for reference)."""
    import json
    import shlex

    words = ["kfp", "--endpoint", host, "run", "create", "--experiment-name", experiment, "--run-name", run_name,
             "--package-file", str(package)]
    for key, value in arguments.items():
        text = json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)
        words.append(f"{key}={text}")
    return " ".join(shlex.quote(w) for w in words)
