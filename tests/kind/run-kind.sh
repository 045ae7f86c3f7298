#!/usr/bin/env bash
# End-to-end on a local kind cluster: an operator (BACKEND=pytorchjob: Training Operator v1.9;
# BACKEND=trainjob: Kubeflow Trainer v2.3 and its stock runtimes), the CPU image, the kind overlay, one
# incremental step as a 2-pod job (gloo), launched by `cdseg launch --backend auto` with the
# cdseg-launcher service account's own token (so the Role and the discovery are exercised too), then
# the checkpoint is checked.
#
#   CDSEG_KIND=1 pytest -m kind tests/kind      or      bash tests/kind/run-kind.sh
#
# Needs: docker (a running engine), kind, kubectl, network access for the operator manifests and base images.
# Env: CLUSTER (default cdseg), KEEP_CLUSTER=1 to keep it, BACKEND (pytorchjob or trainjob, default
# pytorchjob), OPERATOR_REF (default v1.9.0), TRAINER_REF (default v2.3.0), CDSEG (the cdseg CLI).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${CLUSTER:-cdseg}"
BACKEND="${BACKEND:-pytorchjob}"
OPERATOR_REF="${OPERATOR_REF:-v1.9.0}"
TRAINER_REF="${TRAINER_REF:-v2.3.0}"
IMAGE="$(python3 -c "import yaml; print(yaml.safe_load(open('k8s/overlays/kind/launch.yaml'))['image'])" 2>/dev/null || echo cdseg:0.1.0-cpu)"
CDSEG="${CDSEG:-$(command -v cdseg || echo "$ROOT/.venv/bin/cdseg")}"
NS=cdseg
WORK="$(mktemp -d)"
export KUBECONFIG="$WORK/admin.kubeconfig"

log() { printf '\n==> %s\n' "$*"; }
for bin in docker kind kubectl; do
  command -v "$bin" >/dev/null || { echo "run-kind: $bin is not installed" >&2; exit 2; }
done
docker info >/dev/null 2>&1 || { echo "run-kind: no running Docker engine" >&2; exit 2; }

cleanup() {
  rc=$?
  if [ "$rc" -ne 0 ]; then
    log "failure: state of namespace $NS"
    kubectl -n "$NS" get "${BACKEND}s",pods,jobs,pvc -o wide || true
    kubectl -n "$NS" describe pods || true
  fi
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" || true; fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s
fi
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

if [ "$BACKEND" = trainjob ]; then
  log "Kubeflow Trainer $TRAINER_REF (TrainJob v2) and its stock runtimes"
  kubectl apply --server-side -k "github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=$TRAINER_REF"
  kubectl wait --for=condition=Established crd/trainjobs.trainer.kubeflow.org --timeout=120s
  kubectl -n kubeflow-system wait --for=condition=Available deployment --all --timeout=300s
  kubectl apply --server-side -k "github.com/kubeflow/trainer.git/manifests/overlays/runtimes?ref=$TRAINER_REF"
else
  log "Kubeflow Training Operator $OPERATOR_REF (PyTorchJob v1)"
  kubectl apply --server-side -k "github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=$OPERATOR_REF"
  kubectl wait --for=condition=Established crd/pytorchjobs.kubeflow.org --timeout=120s
  kubectl -n kubeflow rollout status deployment/training-operator --timeout=300s
fi

log "CPU image $IMAGE"
docker build -f docker/Dockerfile.cpu \
  --build-arg TORCH_INDEX="${TORCH_INDEX:?set TORCH_INDEX to the URL of the PyTorch CPU wheel index}" -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "kind overlay, and the prepared dataset on the cdseg-data PVC"
kubectl apply -k k8s/overlays/kind
kubectl -n "$NS" wait --for=condition=complete job/cdseg-prepare --timeout=900s

log "a kubeconfig holding only the cdseg-launcher service account's token (RBAC of k8s/base)"
TOKEN="$(kubectl -n "$NS" create token cdseg-launcher --duration=2h)"
kubectl config view --minify --raw > "$WORK/launcher.kubeconfig"
kubectl --kubeconfig "$WORK/launcher.kubeconfig" config set-credentials cdseg-launcher --token="$TOKEN" >/dev/null
kubectl --kubeconfig "$WORK/launcher.kubeconfig" config set-context --current --user=cdseg-launcher >/dev/null

log "step 0 as a 2-node job (gloo on CPU); --backend auto must find the $BACKEND the cluster serves"
"$CDSEG" launch --config k8s/overlays/kind/launch.yaml --step 0 --backend auto --kubeconfig "$WORK/launcher.kubeconfig" \
  2>&1 | tee "$WORK/launch.log"
grep -q "launching a $( [ "$BACKEND" = trainjob ] && echo TrainJob || echo PyTorchJob )" "$WORK/launch.log"

log "the step's checkpoint"
cat <<'YAML' | sed "s|IMAGE_PLACEHOLDER|$IMAGE|" | kubectl -n "$NS" apply -f -
apiVersion: batch/v1
kind: Job
metadata:
  name: cdseg-check-checkpoint
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: check
          image: IMAGE_PLACEHOLDER
          imagePullPolicy: IfNotPresent
          command:
            - python
            - -c
            - |
              import json, pathlib
              model = pathlib.Path("/data/runs/kind-demo/step-0/model")
              card = json.loads((model / "model.json").read_text())
              size = (model / "model.safetensors").stat().st_size
              assert size > 0, "empty weights"
              print("checkpoint ok:", {k: card.get(k) for k in ("task", "step", "method", "epoch")}, size, "bytes")
              assert card.get("step") == 0, card
          resources: {requests: {cpu: 100m, memory: 256Mi}, limits: {cpu: 500m, memory: 512Mi}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          env: [{name: HOME, value: /tmp}]
          volumeMounts: [{name: data, mountPath: /data, readOnly: true}, {name: tmp, mountPath: /tmp}]
      volumes:
        - {name: data, persistentVolumeClaim: {claimName: cdseg-data, readOnly: true}}
        - {name: tmp, emptyDir: {sizeLimit: 64Mi}}
YAML
kubectl -n "$NS" wait --for=condition=complete job/cdseg-check-checkpoint --timeout=300s
kubectl -n "$NS" logs job/cdseg-check-checkpoint
log "kind end-to-end: ok"
