#!/usr/bin/env python3
"""Checks deploy/kubernetes offline: every file parses; every field used exists, at its place,
in the Kubernetes API version the object names (a schema of the fields these manifests may use,
written from the API reference: apps/v1 Deployment, v1 Service, batch/v1 Job, kustomize v1beta1);
the image is the one scripts/image.sh builds; and every flag passed to /ricochet or /loadgen
(container args, probe commands) is a real flag of that binary (from its --help).

    python3 scripts/check-manifests.py target/release   # the directory with both binaries
"""

import glob
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IMAGE = "localhost/ricochet:latest"

# Allowed keys by schema name; a value names the schema of the field's value ("" = a scalar,
# "[x]" = a list of schema x, "map" = free-form string map).
S = {
    "meta": {"name": "", "labels": "map", "namespace": "", "annotations": "map"},
    "selector": {"matchLabels": "map"},
    "deployment_spec": {"replicas": "", "selector": "selector", "template": "pod_template"},
    "pod_template": {"metadata": "meta", "spec": "pod_spec"},
    "pod_spec": {"terminationGracePeriodSeconds": "", "securityContext": "pod_security",
                 "containers": "[container]", "restartPolicy": ""},
    "pod_security": {"runAsNonRoot": "", "runAsUser": "", "runAsGroup": ""},
    "container": {"name": "", "image": "", "imagePullPolicy": "", "command": "[]", "args": "[]",
                  "ports": "[port]", "readinessProbe": "probe", "livenessProbe": "probe",
                  "resources": "resources", "securityContext": "container_security", "env": "[env]"},
    "port": {"name": "", "containerPort": "", "protocol": ""},
    "probe": {"exec": "exec", "httpGet": "http_get", "periodSeconds": "", "timeoutSeconds": "",
              "failureThreshold": "", "initialDelaySeconds": ""},
    "exec": {"command": "[]"},
    "http_get": {"path": "", "port": "", "scheme": ""},
    "resources": {"requests": "map", "limits": "map"},
    "container_security": {"allowPrivilegeEscalation": "", "readOnlyRootFilesystem": "",
                           "capabilities": "capabilities"},
    "capabilities": {"drop": "[]", "add": "[]"},
    "env": {"name": "", "value": ""},
    "service_spec": {"selector": "map", "ports": "[service_port]", "type": ""},
    "service_port": {"name": "", "port": "", "targetPort": "", "protocol": ""},
    "job_spec": {"completionMode": "", "completions": "", "parallelism": "", "backoffLimit": "",
                 "template": "pod_template"},
}
KINDS = {
    ("apps/v1", "Deployment"): "deployment_spec",
    ("v1", "Service"): "service_spec",
    ("batch/v1", "Job"): "job_spec",
}

errors = []


def check(value, schema, path):
    if schema == "map":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            errors.append(f"{path}: expected a map of strings")
        return
    if schema == "":
        if isinstance(value, (dict, list)):
            errors.append(f"{path}: expected a scalar")
        return
    if schema.startswith("["):
        inner = schema[1:-1]
        if not isinstance(value, list):
            return errors.append(f"{path}: expected a list")
        for i, item in enumerate(value):
            check(item, inner, f"{path}[{i}]")
        return
    if not isinstance(value, dict):
        return errors.append(f"{path}: expected an object")
    for key, item in value.items():
        if key not in S[schema]:
            errors.append(f"{path}.{key}: not a field of {schema.replace('_', ' ')}")
        else:
            check(item, S[schema][key], f"{path}.{key}")


def flags_of(binary, *sub):
    text = subprocess.run([binary, *sub, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", text))


def check_invocation(argv, flags, path):
    for arg in argv:
        if arg.startswith("--") and arg.split("=")[0] not in flags:
            errors.append(f"{path}: {arg} is not a flag of this binary")


def main():
    bins = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release")
    ricochet_flags = flags_of(os.path.join(bins, "ricochet"))
    loadgen_flags = flags_of(os.path.join(bins, "loadgen"))
    probe_flags = flags_of(os.path.join(bins, "loadgen"), "probe")
    files = sorted(glob.glob(os.path.join(ROOT, "deploy", "kubernetes", "*.yaml")))
    if not files:
        errors.append("no manifests in deploy/kubernetes")
    objects = 0
    for file in files:
        name = os.path.relpath(file, ROOT)
        for doc in yaml.safe_load_all(open(file)):
            if doc is None:
                continue
            if doc.get("kind") == "Kustomization":
                for resource in doc.get("resources", []):
                    if not os.path.exists(os.path.join(os.path.dirname(file), resource)):
                        errors.append(f"{name}: resource {resource} does not exist")
                continue
            objects += 1
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key not in KINDS:
                errors.append(f"{name}: {key} is not a kind these manifests may use")
                continue
            extra = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
            if extra:
                errors.append(f"{name}: unknown top-level fields {sorted(extra)}")
            check(doc.get("metadata", {}), "meta", f"{name}:{doc['kind']}.metadata")
            check(doc.get("spec", {}), KINDS[key], f"{name}:{doc['kind']}.spec")
            template = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in template.get("containers", []):
                where = f"{name}:{doc['kind']}.{c.get('name')}"
                if c.get("image") != IMAGE:
                    errors.append(f"{where}: image {c.get('image')} is not {IMAGE} (scripts/image.sh)")
                command = c.get("command", ["/ricochet"])
                flags = loadgen_flags if command == ["/loadgen"] else ricochet_flags
                check_invocation(c.get("args", []), flags, f"{where}.args")
                for probe in ("readinessProbe", "livenessProbe"):
                    http = c.get(probe, {}).get("httpGet")
                    if http:
                        # Served by ricochet's --metrics listener, on a port the container names.
                        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
                        port = ports.get(http.get("port"), http.get("port"))
                        args = c.get("args", [])
                        metrics = args[args.index("--metrics") + 1] if "--metrics" in args else None
                        if http.get("path") not in ("/healthz", "/metrics"):
                            errors.append(f"{where}.{probe}: {http.get('path')} is not served")
                        if metrics is None or not metrics.endswith(f":{port}"):
                            errors.append(f"{where}.{probe}: port {port} is not --metrics ({metrics})")
                    cmd = c.get(probe, {}).get("exec", {}).get("command")
                    if cmd:
                        if cmd[:2] != ["/loadgen", "probe"]:
                            errors.append(f"{where}.{probe}: expected /loadgen probe")
                        check_invocation(cmd[2:], probe_flags, f"{where}.{probe}")
    for e in errors:
        print("error:", e)
    if errors:
        sys.exit(1)
    print(f"{len(files)} files, {objects} objects: every field known, every flag real")


if __name__ == "__main__":
    main()
