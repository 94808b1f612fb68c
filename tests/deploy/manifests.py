"""The rendered Kubernetes manifests (``kubectl kustomize``) and what the tests read in them."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "production")
ROLES = ("gateway", "worker", "dispatcher")

Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (.ci/run tries to install it)")
    return found


@functools.cache
def _render(path: str) -> tuple[Obj, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", path], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def render(overlay: str) -> list[Obj]:
    """The objects ``kubectl kustomize deploy/k8s/overlays/<overlay>`` renders."""
    return list(_render(str(K8S / "overlays" / overlay)))


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} named {name}"
    return found[0]


def deployment(objects: list[Obj], role: str) -> Obj:
    return one(objects, "Deployment", f"rspp-{role}")


def container(workload: Obj) -> Obj:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def config_map(objects: list[Obj], name: str) -> Obj:
    """A generated ConfigMap, by the name before kustomize's hash suffix."""
    found = [
        o
        for o in of_kind(objects, "ConfigMap")
        if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"{len(found)} ConfigMaps named {name}"
    return found[0]


def env_of(objects: list[Obj], c: Obj) -> dict[str, str]:
    """A container's environment as the kubelet would set it (Secrets: a stand-in value)."""
    maps = {o["metadata"]["name"]: o.get("data", {}) for o in of_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = maps[ref["name"]][ref["key"]]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            env[var["name"]] = f"<secret {var['valueFrom']['secretKeyRef']['name']}>"
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env: ``$$`` is a ``$``; a
    reference to a variable that is not defined is left as it is."""

    def one_ref(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([^)]*)\)", one_ref, text)


def argv(objects: list[Obj], workload: Obj, entrypoint: tuple[str, ...] = ("rspp",)) -> list[str]:
    """The container's command line after the kubelet's expansion (the image's
    ENTRYPOINT is ``rspp``)."""
    c = container(workload)
    env = env_of(objects, c)
    command = [expand(a, env) for a in c.get("command", entrypoint)]
    return [*command, *(expand(a, env) for a in c.get("args", []))]
