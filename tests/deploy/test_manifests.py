"""deploy/k8s: each overlay renders, every object is valid for Kubernetes (and for its CRD),
and the manifests keep the promises docs/deploy.md makes: the drain fits the grace period,
the probes hit the roles' real routes, the flags are the CLI's, the autoscalers and the
dashboard read metrics the roles export, and the network policies let in what they should.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped, unused-ignore]
import kubernetes_validate  # type: ignore[import-untyped, unused-ignore]
import pytest
import yaml

from tests.deploy.manifests import (
    K8S,
    OVERLAYS,
    ROLES,
    ROOT,
    Obj,
    argv,
    config_map,
    container,
    deployment,
    env_of,
    of_kind,
    one,
    render,
)

#: The Kubernetes versions every built-in object is validated against (strict schemas): the
#: oldest minor still under upstream and managed-cloud support when written, and the newest
#: kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

SCHEMAS = Path(__file__).parent / "schemas"
#: Custom resources: (apiVersion, kind) -> the minimal schema written from the CRD's docs.
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "scaledobject-keda.sh-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS
    / "servicemonitor-monitoring.coreos.com-v1.json",
}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- validity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_for_kubernetes_or_its_crd(overlay: str, version: str) -> None:
    objects = render(overlay)
    assert len(objects) > 10
    problems = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        try:
            if crd is not None:
                jsonschema.validate(obj, json.loads(crd.read_text()))
            else:
                kubernetes_validate.validate(obj, version, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            problems.append(f"{name}: {exc}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no schema for {obj['apiVersion']} (a CRD without one?)")
    assert not problems, "\n".join(problems)


def test_the_schemas_catch_a_misplaced_field() -> None:
    """Validation is strict enough to fail a wrong manifest, built-in or custom."""
    worker = deployment(render("production"), "worker")
    wrong = json.loads(json.dumps(worker))
    wrong["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSIONS[0], strict=True)
    wrong = json.loads(json.dumps(worker))
    wrong["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "60"  # not a number
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSIONS[0], strict=True)

    scaled = one(render("production"), "ScaledObject", "rspp-worker")
    schema = json.loads(CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")].read_text())
    jsonschema.validate(scaled, schema)
    wrong = json.loads(json.dumps(scaled))
    wrong["spec"]["minReplicas"] = 2  # the HPA's name, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)
    wrong = json.loads(json.dumps(scaled))
    del wrong["spec"]["triggers"][0]["metadata"]["threshold"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)

    monitor = one(render("production"), "ServiceMonitor", "rspp")
    schema = json.loads(CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")].read_text())
    wrong = json.loads(json.dumps(monitor))
    wrong["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)


def test_no_secret_is_in_the_repository_and_each_one_referred_to_is_documented(
    overlay: str,
) -> None:
    objects = render(overlay)
    assert not of_kind(objects, "Secret")
    referred = set()
    for obj in objects:
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    referred.add((ref["name"], ref["key"]))
            assert not c.get("envFrom"), "every secret is named key by key"
    assert referred
    docs = (ROOT / "docs" / "deploy.md").read_text()
    missing = [f"{name}/{key}" for name, key in referred if name not in docs or key not in docs]
    assert not missing, f"secrets docs/deploy.md does not tell the operator to create: {missing}"


# -- the command lines are the CLI's ------------------------------------------------------------


def _cli() -> argparse.ArgumentParser:
    from rspp.cli.cluster import add_parsers

    parser = argparse.ArgumentParser(prog="rspp", exit_on_error=False)
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def _parse(command: list[str]) -> argparse.Namespace:
    assert command[0] == "rspp", command
    try:
        return _cli().parse_args(command[1:])
    except SystemExit as exc:  # an unknown flag: argparse prints it and exits
        raise AssertionError(f"rspp rejects {command}") from exc


def _worker_command(objects: list[Obj], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """Run the worker container's shell command with a stand-in ``rspp`` that records the
    command line it was given, as the container would start it."""
    workload = deployment(objects, "worker")
    env = env_of(objects, container(workload))
    fake = tmp_path / "rspp"
    record = tmp_path / "argv.json"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(['rspp', *sys.argv[1:]]))\n"
    )
    fake.chmod(0o755)
    command = argv(objects, workload)
    assert command[:2] == ["/bin/sh", "-c"], "the worker's shell computes its drain deadline"
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    subprocess.run(command, env={**env, "PATH": path}, check=True, timeout=30)
    return json.loads(record.read_text()), env


def test_the_worker_drain_deadline_is_the_grace_period_less_the_margin(
    overlay: str, tmp_path: Path
) -> None:
    objects = render(overlay)
    workload = deployment(objects, "worker")
    drain = config_map(objects, "rspp-worker-drain")["data"]
    grace, margin = int(drain["grace-seconds"]), int(drain["margin-seconds"])
    # The one value: the pods' grace period is the ConfigMap's, in every overlay.
    assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == grace
    command, _ = _worker_command(objects, tmp_path)
    args = _parse(command)
    assert args.command == "worker"
    assert args.drain_deadline == grace - margin
    # The margin covers the worker's stop after its deadline, the preStop hook's own start
    # and the kubelet's SIGTERM before SIGKILL; half the deadline waits for turn ends.
    assert 5 <= margin <= grace / 3


def test_the_overlays_override_the_grace_period() -> None:
    graces = {
        name: config_map(render(name), "rspp-worker-drain")["data"]["grace-seconds"]
        for name in OVERLAYS
    }
    assert len(set(graces.values())) == len(OVERLAYS), graces  # so the replacement is tested


def _port(c: Obj, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    return int(ports[name])


def test_each_role_runs_a_real_rspp_command_on_its_declared_port(
    overlay: str, tmp_path: Path
) -> None:
    objects = render(overlay)
    worker, _ = _worker_command(objects, tmp_path)
    commands = {
        "worker": worker,
        "gateway": argv(objects, deployment(objects, "gateway")),
        "dispatcher": argv(objects, deployment(objects, "dispatcher")),
    }
    parsed = {role: _parse(command) for role, command in commands.items()}
    for role in ROLES:
        assert parsed[role].command == role
    assert parsed["worker"].http_port == _port(container(deployment(objects, "worker")), "metrics")
    assert parsed["gateway"].port == _port(container(deployment(objects, "gateway")), "http")
    assert parsed["gateway"].host == "0.0.0.0"
    admin = _port(container(deployment(objects, "dispatcher")), "admin")
    assert parsed["dispatcher"].admin_port == admin
    # The dispatchers judge lapsed leases with the workers' TTL.
    assert parsed["dispatcher"].lease_ttl_ms == parsed["worker"].lease_ttl_ms


def test_gateways_and_workers_offer_the_same_pipelines_from_the_config_map(overlay: str) -> None:
    from rspp.kernel import build, load_spec

    objects = render(overlay)
    specs = config_map(objects, "rspp-pipelines")
    offered = {}
    for role in ("gateway", "worker"):
        workload = deployment(objects, role)
        c = container(workload)
        mount = next(m for m in c["volumeMounts"] if m["name"] == "pipelines")
        volume = next(
            v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == "pipelines"
        )
        assert volume["configMap"]["name"] == specs["metadata"]["name"]
        paths = [a for a in c["args"] if a.startswith(mount["mountPath"] + "/")]
        assert paths, f"the {role} offers no spec from the ConfigMap"
        offered[role] = paths
        for path in paths:
            assert Path(path).name in specs["data"], f"{path} is not in the ConfigMap"
    assert offered["gateway"] == offered["worker"]
    for name, text in specs["data"].items():
        pipeline = build(load_spec(Path(name), text=text))
        assert pipeline.name


# -- health and drain -------------------------------------------------------------------------


def _routes(role: str) -> set[str]:
    """The paths the role's HTTP app really serves."""
    from rspp.cli.cluster import _admin_app, _worker_app

    if role == "worker":
        app = _worker_app(None)
    elif role == "dispatcher":
        app = _admin_app(None)
    else:
        from rspp.demo import caller_script, demo_pipeline
        from rspp.kernel import build
        from rspp.transports.port import LocalHost
        from rspp.transports.server import create_app

        fake = build(demo_pipeline(caller_script()).spec)
        app = create_app(LocalHost({fake.name: fake}))
    return {str(getattr(route, "path", "")) for route in app.routes}


def test_probes_hit_real_routes_and_liveness_is_tolerant(overlay: str) -> None:
    objects = render(overlay)
    for role in ROLES:
        c = container(deployment(objects, role))
        routes = _routes(role)
        ports = {p["name"] for p in c["ports"]}
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            assert probe["httpGet"]["path"] in routes, f"{role} {kind}"
            assert probe["httpGet"]["port"] in ports, f"{role} {kind}"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        live = c["livenessProbe"]
        # A busy worker must not be killed: a minute of silence, not one missed probe.
        assert live["failureThreshold"] * live["periodSeconds"] >= 60, role
        assert live.get("timeoutSeconds", 1) >= 5, role
    worker = container(deployment(objects, "worker"))
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"  # 503 while draining
    startup = worker["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"  # "loading" until the models are loaded
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 300


def test_the_worker_pre_stop_hook_drains_through_the_worker_route(overlay: str) -> None:
    objects = render(overlay)
    c = container(deployment(objects, "worker"))
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    compile(command[2], "preStop", "exec")
    assert "/drain?wait=1" in command[2]
    assert "/drain" in _routes("worker")
    # It reaches the worker's own port: the port it reads is the one the worker serves.
    assert "RSPP_HTTP_PORT" in command[2]
    assert env_of(objects, c)["RSPP_HTTP_PORT"] == str(_port(c, "metrics"))
    # New workers are ready before an old one drains (a drain needs somewhere to go).
    assert deployment(objects, "worker")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# -- replicas, disruption budgets, autoscaling ------------------------------------------------


def test_dispatchers_run_at_least_two(overlay: str) -> None:
    assert deployment(render(overlay), "dispatcher")["spec"]["replicas"] >= 2


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def test_each_role_has_a_disruption_budget_that_selects_its_pods_only(overlay: str) -> None:
    objects = render(overlay)
    workloads = of_kind(objects, "Deployment") + of_kind(objects, "StatefulSet")
    budgets = of_kind(objects, "PodDisruptionBudget")
    for role in ROLES:
        workload = deployment(objects, role)
        mine = [b for b in budgets if _selects(b["spec"]["selector"], _pod_labels(workload))]
        assert len(mine) == 1, role
        others = [
            w["metadata"]["name"]
            for w in workloads
            if w is not workload and _selects(mine[0]["spec"]["selector"], _pod_labels(w))
        ]
        assert not others, f"{role}'s budget also selects {others}"
        assert mine[0]["spec"].get("maxUnavailable") == 1
    # Two dispatchers and a budget of one: one always runs through a node drain.
    dispatchers = deployment(objects, "dispatcher")["spec"]["replicas"]
    assert dispatchers - 1 >= 1


def _autoscalers(objects: list[Obj]) -> list[Obj]:
    return of_kind(objects, "HorizontalPodAutoscaler") + of_kind(objects, "ScaledObject")


def _behavior(scaler: Obj) -> dict[str, Any]:
    if scaler["kind"] == "ScaledObject":
        return dict(scaler["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"])
    return dict(scaler["spec"]["behavior"])


def test_one_autoscaler_owns_the_workers_and_scales_down_slowly(overlay: str) -> None:
    objects = render(overlay)
    scalers = _autoscalers(objects)
    assert len(scalers) == 1, "an HPA and a ScaledObject on one Deployment fight"
    scaler = scalers[0]
    assert scaler["spec"]["scaleTargetRef"]["name"] == "rspp-worker"
    floor = scaler["spec"].get("minReplicas", scaler["spec"].get("minReplicaCount"))
    assert floor >= 2  # a drain needs another worker to hand over to
    assert "replicas" not in deployment(objects, "worker")["spec"], "the autoscaler owns it"
    down = _behavior(scaler)["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300
    assert down["policies"]
    for policy in down["policies"]:  # at most one worker per N minutes
        assert policy == {"type": "Pods", "value": 1, "periodSeconds": policy["periodSeconds"]}
        assert policy["periodSeconds"] >= 120


def test_the_hpa_and_keda_components_behave_alike() -> None:
    scalers = {s["kind"]: s for name in OVERLAYS for s in _autoscalers(render(name))}
    assert set(scalers) == {"HorizontalPodAutoscaler", "ScaledObject"}
    hpa, keda = scalers["HorizontalPodAutoscaler"], scalers["ScaledObject"]
    assert _behavior(hpa) == _behavior(keda)
    assert hpa["spec"]["minReplicas"] == keda["spec"]["minReplicaCount"]
    assert hpa["spec"]["maxReplicas"] == keda["spec"]["maxReplicaCount"]
    target = hpa["spec"]["metrics"][0]["pods"]["target"]
    assert target == {"type": "AverageValue", "averageValue": "700m"}
    trigger = keda["spec"]["triggers"][0]
    assert trigger["metricType"] == "AverageValue"
    assert float(trigger["metadata"]["threshold"]) == 0.7


# -- metric names -----------------------------------------------------------------------------


def _exported() -> dict[str, set[str]]:
    """Every series name each role exports, from the code's own metric declarations."""
    from rspp.cluster.metrics import DispatcherMetrics, GatewayMetrics, WorkerMetrics
    from rspp.transports.metrics import ServerMetrics

    gateway = GatewayMetrics()
    ServerMetrics(gateway.registry)  # the gateway's /metrics: one registry for both
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    roles = {"worker": WorkerMetrics(), "dispatcher": DispatcherMetrics(), "gateway": gateway}
    return {
        role: {f.name + s for f in metrics.registry.collect() for s in suffixes[f.type]}
        for role, metrics in roles.items()
    }


def _names(query: str) -> set[str]:
    return set(re.findall(r"\brspp_[a-z0-9_]+", query))


def test_the_dashboard_uses_only_exported_metrics(overlay: str) -> None:
    exported = set().union(*_exported().values())
    data = config_map(render(overlay), "rspp-grafana-dashboard")
    dashboard = json.loads(data["data"]["rspp.json"])
    used: set[str] = set()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = _names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']}"
            used |= names
    for variable in dashboard["templating"]["list"]:
        used |= _names(json.dumps(variable.get("query", "")))
    unknown = used - exported
    assert not unknown, f"the dashboard reads metrics no role exports: {sorted(unknown)}"
    # Every role shows up.
    for role, names in _exported().items():
        assert used & names, role


def test_the_autoscalers_read_the_workers_own_metrics() -> None:
    worker = _exported()["worker"]
    keda = one(render("production"), "ScaledObject", "rspp-worker")
    query = keda["spec"]["triggers"][0]["metadata"]["query"]
    assert _names(query) == {"rspp_worker_sessions", "rspp_worker_capacity"} <= worker
    assert 'namespace="rspp"' in query

    rules_file = K8S / "components" / "autoscale-hpa" / "prometheus-adapter-rules.yaml"
    rules = yaml.safe_load(rules_file.read_text())["rules"]["custom"]
    served = {rule["name"]["as"]: rule for rule in rules}
    hpa = one(render("local"), "HorizontalPodAutoscaler", "rspp-worker")
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    rule = served[metric["pods"]["metric"]["name"]]
    assert _names(rule["seriesQuery"]) <= worker
    assert _names(rule["metricsQuery"]) == {"rspp_worker_sessions", "rspp_worker_capacity"}
    assert re.fullmatch(rule["name"]["matches"], "rspp_worker_sessions")


def test_every_role_is_scraped(overlay: str) -> None:
    objects = render(overlay)
    monitor = one(objects, "ServiceMonitor", "rspp")
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    services = [
        s
        for s in of_kind(objects, "Service")
        if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    for role in ROLES:
        workload = deployment(objects, role)
        scraped = [
            s
            for s in services
            if _selects({"matchLabels": s["spec"]["selector"]}, _pod_labels(workload))
            and endpoint_ports & {p["name"] for p in s["spec"]["ports"]}
        ]
        assert scraped, f"no ServiceMonitor'd Service reaches the {role}s"
        port = next(p for p in scraped[0]["spec"]["ports"] if p["name"] in endpoint_ports)
        assert port["targetPort"] in {p["name"] for p in container(workload)["ports"]}
        assert monitor["spec"]["jobLabel"] in scraped[0]["metadata"]["labels"]


# -- the store ----------------------------------------------------------------------------------


def test_production_uses_the_external_redis_only_through_a_secret() -> None:
    objects = render("production")
    assert not [o for o in objects if o["metadata"]["name"] == "rspp-redis"]
    for role in ROLES:
        env = {v["name"]: v for v in container(deployment(objects, role))["env"]}
        url = env["RSPP_REDIS_URL"]
        assert "value" not in url
        assert url["valueFrom"]["secretKeyRef"] == {"name": "rspp-redis-external", "key": "url"}


def test_local_roles_reach_the_in_cluster_redis() -> None:
    objects = render("local")
    redis = one(objects, "Service", "rspp-redis")
    port = redis["spec"]["ports"][0]["port"]
    one(objects, "StatefulSet", "rspp-redis")
    for role in ROLES:
        env = env_of(objects, container(deployment(objects, role)))
        assert env["RSPP_REDIS_URL"] == f"redis://rspp-redis:{port}/0"
        assert env["RSPP_REDIS_PASSWORD"] == "<secret rspp-redis>"


# -- exposure and network policies ------------------------------------------------------------


def test_only_the_gateway_service_is_exposed(overlay: str) -> None:
    services = of_kind(render(overlay), "Service")
    exposed = [
        s["metadata"]["name"]
        for s in services
        if s["spec"].get("type") in ("LoadBalancer", "NodePort")
    ]
    assert exposed in ([], ["rspp-gateway"])
    if overlay == "production":
        assert exposed == ["rspp-gateway"]
    for s in services:  # the others: headless (metrics) or in-cluster (Redis)
        if s["metadata"]["name"] != "rspp-gateway":
            assert s["spec"].get("type", "ClusterIP") == "ClusterIP"


OUTSIDE = None  # a client outside the cluster (the Internet, a load balancer)
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}


class Pod:
    def __init__(self, namespace: str, labels: dict[str, str], ns_labels: dict[str, str]) -> None:
        self.namespace, self.labels, self.ns_labels = namespace, labels, ns_labels


def _admitted(objects: list[Obj], target: Obj, port: int, source: Pod | None) -> bool:
    """Whether the NetworkPolicies let ``source`` reach ``target``'s pods on ``port``."""
    namespace = target["metadata"].get("namespace", "default")
    labels = _pod_labels(target)
    named = {
        p["name"]: p["containerPort"]
        for c in target["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    selecting = [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if p["metadata"].get("namespace", "default") == namespace
        and _selects(p["spec"]["podSelector"], labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True

    def port_ok(ports: list[dict[str, Any]] | None) -> bool:
        if not ports:
            return True
        return any(
            "port" not in p or p["port"] == port or named.get(str(p["port"])) == port for p in ports
        )

    def peer_ok(peer: dict[str, Any]) -> bool:
        if "ipBlock" in peer:
            return (
                source is OUTSIDE and ipaddress.ip_network(peer["ipBlock"]["cidr"]).prefixlen == 0
            )
        if source is OUTSIDE:
            return False
        if "namespaceSelector" in peer:
            if not _selects(peer["namespaceSelector"], source.ns_labels):
                return False
        elif source.namespace != namespace:
            return False
        return "podSelector" not in peer or _selects(peer["podSelector"], source.labels)

    return any(
        port_ok(rule.get("ports")) and (not rule.get("from") or any(map(peer_ok, rule["from"])))
        for policy in selecting
        for rule in policy["spec"].get("ingress", [])
    )


def test_network_policies_let_in_only_what_they_should(overlay: str) -> None:
    objects = render(overlay)
    gateway, worker, dispatcher = (deployment(objects, role) for role in ROLES)
    ns = gateway["metadata"]["namespace"]
    ns_labels = {"kubernetes.io/metadata.name": ns}
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}, MONITORING)
    stranger = Pod(ns, {"app": "something-else"}, ns_labels)
    other_ns = Pod("elsewhere", {"app": "x"}, {"kubernetes.io/metadata.name": "elsewhere"})

    def port(workload: Obj, name: str) -> int:
        return _port(container(workload), name)

    # Only gateways accept traffic from outside.
    assert _admitted(objects, gateway, port(gateway, "http"), OUTSIDE)
    assert _admitted(objects, gateway, port(gateway, "http"), stranger)
    assert not _admitted(objects, worker, port(worker, "metrics"), OUTSIDE)
    assert not _admitted(objects, dispatcher, port(dispatcher, "admin"), OUTSIDE)
    # Workers and dispatchers: the metrics port, from the monitoring namespace only.
    assert _admitted(objects, worker, port(worker, "metrics"), prometheus)
    assert _admitted(objects, dispatcher, port(dispatcher, "admin"), prometheus)
    assert not _admitted(objects, worker, 9999, prometheus)
    for source in (stranger, other_ns):
        assert not _admitted(objects, worker, port(worker, "metrics"), source)
        assert not _admitted(objects, dispatcher, port(dispatcher, "admin"), source)

    if overlay == "production":
        return  # the store is outside the cluster
    redis = one(objects, "StatefulSet", "rspp-redis")
    redis_port = _port(container(redis), "redis")
    for role in (gateway, worker, dispatcher):
        pod = Pod(ns, _pod_labels(role), ns_labels)
        assert _admitted(objects, redis, redis_port, pod), role["metadata"]["name"]
    impostor = Pod(ns, {"app.kubernetes.io/component": "worker"}, ns_labels)
    role_elsewhere = Pod("elsewhere", _pod_labels(worker), other_ns.ns_labels)
    for outsider in (OUTSIDE, stranger, prometheus, impostor, role_elsewhere):
        assert not _admitted(objects, redis, redis_port, outsider)


# -- the image --------------------------------------------------------------------------------


def test_the_image_runs_as_the_pods_user_with_rspp_as_its_entrypoint(overlay: str) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users, "the image must not run as root"
    uid = int(users[-1].split(":")[0])
    assert uid != 0
    entrypoints = re.findall(r"^ENTRYPOINT\s+(.+)$", dockerfile, re.M)
    assert json.loads(entrypoints[-1]) == ["rspp"]
    for role in ROLES:
        spec = deployment(render(overlay), role)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsUser"] == uid
        assert spec["securityContext"]["runAsNonRoot"] is True
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)
