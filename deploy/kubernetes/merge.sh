#!/usr/bin/env bash
# Runs the loadgen Job with every pod starting together, then merges their results.
#
#   bash deploy/kubernetes/merge.sh [SECONDS_FROM_NOW]   # default 30: time for the pods to start
#
# Needs kubectl (pointed at the cluster where ricochet.yaml is applied) and a local loadgen.
set -euo pipefail
cd "$(dirname "$0")"
lead=${1:-30}
start_at=$(( $(date +%s) + lead ))
kubectl delete job loadgen --ignore-not-found
sed "s/value: \"0\"/value: \"$start_at\"/" loadgen-job.yaml | kubectl apply -f -
kubectl wait --for=condition=complete --timeout=$(( lead + 600 ))s job/loadgen
results=$(mktemp -d)
for pod in $(kubectl get pods -l job-name=loadgen -o name); do
  kubectl logs "$pod" | tail -n 1 >"$results/${pod#pod/}.json"
done
loadgen merge "$results"/*.json
