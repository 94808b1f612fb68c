"""Building a pipeline: from a spec (data) to a validated, immutable plan.

Everything that can be wrong with a spec is found here, at build time, and
reported together in one :class:`~rspp.kernel.errors.BuildError`: an unknown
node type, a config that does not match the type's schema, a wire to a node
that does not exist, a cycle, and -- the error that otherwise shows up as a
silent stall at run time -- a node that consumes a kind nothing upstream of it
produces.

Routing rule. An event emitted by node A goes to every node downstream of A
that consumes its kind, looking *through* nodes that do not consume it: a kind
a node does not handle passes it by untouched. Routes for the kinds a node
declares are computed here; routes for kinds that appear only at run time
(kinds from newer peers) are computed on first sight and cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any

import msgspec

from rspp.events import Lane, kind_of
from rspp.kernel.errors import BuildError
from rspp.kernel.node import Node, NodeConfig
from rspp.kernel.registry import NodeRegistry, default_registry
from rspp.kernel.spec import INPUT, PipelineSpec, Policy

if TYPE_CHECKING:
    from rspp.kernel.session import Session, Sink

__all__ = ["NodePlan", "Pipeline", "build"]

ANY = "*"


@dataclass(frozen=True)
class NodePlan:
    """One node of a built pipeline."""

    name: str
    type_name: str
    cls: type[Node[Any]]
    config: NodeConfig
    inputs: tuple[str, ...]
    sink: str | None
    queued: bool
    capacity: int
    policies: Mapping[str, Policy]
    #: Names of every node reachable downstream (for backpressure without deadlock).
    downstream: frozenset[str]
    #: Restarts of a dead task before the session fails.
    restarts: int = 0

    def policy(self, kind: str, default: str) -> Policy:
        """The overload policy for ``kind`` at this node's inbox (resolved once per kind)."""
        return self.policies.get(kind) or Policy(default)


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline, shareable by any number of sessions.

    Its plan never changes; only the route cache grows when a kind appears
    that no node declared (the routes it caches are a pure function of the plan).
    """

    spec: PipelineSpec
    nodes: tuple[NodePlan, ...]  # topological order
    children: Mapping[str, tuple[str, ...]]
    _consumes: Mapping[str, frozenset[str]]
    _static_routes: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The spec's name."""
        return self.spec.name

    def route(self, source: str, kind: str) -> tuple[str, ...]:
        """Names of the nodes that receive ``kind`` when ``source`` emits it (see module doc)."""
        key = (source, kind)
        hit = self._static_routes.get(key)
        if hit is not None:
            return hit
        out: list[str] = []
        seen: set[str] = set()
        stack = list(reversed(self.children.get(source, ())))
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            consumed = self._consumes[name]
            if kind in consumed or ANY in consumed:
                out.append(name)
            else:
                stack.extend(reversed(self.children.get(name, ())))
        order = {plan.name: i for i, plan in enumerate(self.nodes)}
        result = tuple(sorted(out, key=order.__getitem__))
        self._static_routes[key] = result
        return result

    def session(
        self,
        session_id: str | None = None,
        *,
        sinks: Mapping[str, Sink] | None = None,
        resources: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Session:
        """A new session of this pipeline (use it as ``async with``)."""
        from rspp.kernel.session import Session

        return Session(self, session_id, sinks=sinks, resources=resources, **kwargs)


def build(spec: PipelineSpec, registry: NodeRegistry | None = None) -> Pipeline:
    """Validate ``spec`` and build its plan; raise BuildError listing every problem."""
    reg = registry or default_registry
    problems: list[str] = []
    classes: dict[str, type[Node[Any]]] = {}
    configs: dict[str, NodeConfig] = {}
    names: list[str] = []

    if not spec.nodes:
        problems.append(f"pipeline {spec.name!r} has no nodes")
    for kind in spec.input:
        input_cls = kind_of(kind)
        if input_cls is not None and input_cls.lane is Lane.CONTROL:
            problems.append(f"input kind {kind!r} is a control kind; control events are not wired")

    for node in spec.nodes:
        where = f"node {node.name!r}"
        if not node.name or node.name == INPUT or node.name == ANY:
            problems.append(f"{where}: the name {node.name!r} is reserved or empty")
        if node.name in names:
            problems.append(f"{where}: duplicate node name")
        names.append(node.name)
        try:
            cls = reg.get(node.type)
        except (ImportError, AttributeError, TypeError) as exc:
            problems.append(f"{where}: node type {node.type!r} failed to load: {exc}")
            continue
        if cls is None:
            known = ", ".join(reg.names())
            problems.append(f"{where}: unknown node type {node.type!r} (known: {known})")
            continue
        classes[node.name] = cls
        try:
            configs[node.name] = msgspec.convert(node.config, cls.Config, strict=False)
        except msgspec.ValidationError as exc:
            problems.append(f"{where}: bad config for {node.type!r}: {exc}")
        if cls.consumes and not cls.handles_events():
            problems.append(f"{where}: type {node.type!r} consumes kinds but has no handler")
        if cls.streaming and node.queued is False:
            problems.append(f"{where}: a streaming node always runs queued")
        if node.queue.capacity < 1:
            problems.append(f"{where}: queue capacity must be at least 1")
        for kind in cls.consumes + cls.accepts:
            kcls = kind_of(kind)
            if kcls is not None and kcls.lane is Lane.CONTROL:
                problems.append(
                    f"{where}: consumes control kind {kind!r}; list it in `controls` instead"
                )

    known_names = set(names)
    for node in spec.nodes:
        if not node.inputs:
            problems.append(f"node {node.name!r}: no inputs (use {INPUT!r} for the ingress)")
        for up in node.inputs:
            if up != INPUT and up not in known_names:
                problems.append(f"node {node.name!r}: input {up!r} is not a node of this pipeline")
            if up == node.name and up != INPUT:
                problems.append(f"node {node.name!r}: wired to itself")

    # The cycle check runs whatever else is wrong (on the wires that make sense).
    graph = {
        node.name: {i for i in node.inputs if i in known_names and i not in (INPUT, node.name)}
        for node in spec.nodes
        if node.name != INPUT
    }
    order: list[str] = []
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        problems.append(f"the wiring has a cycle: {cycle}")

    if problems:
        raise BuildError(problems)

    by_name = {node.name: node for node in spec.nodes}
    children: dict[str, list[str]] = {INPUT: []}
    for name in order:
        children.setdefault(name, [])
        for up in by_name[name].inputs:
            children.setdefault(up, []).append(name)

    consumes = {name: frozenset(classes[name].consumes + classes[name].accepts) for name in order}
    _check_kinds_reach(spec, order, by_name, classes, problems)
    if problems:
        raise BuildError(problems)

    plans = []
    for name in order:
        node = by_name[name]
        cls = classes[name]
        plans.append(
            NodePlan(
                name=name,
                type_name=node.type,
                cls=cls,
                config=configs[name],
                inputs=tuple(node.inputs),
                sink=node.sink,
                queued=cls.streaming or bool(node.queued),
                capacity=node.queue.capacity,
                policies=dict(node.queue.policy),
                downstream=frozenset(_reachable(name, children)),
                restarts=node.restarts,
            )
        )
    pipeline = Pipeline(
        spec=spec,
        nodes=tuple(plans),
        children={k: tuple(v) for k, v in children.items()},
        _consumes=consumes,
    )
    # Precompute routes for every declared kind so the hot path never walks the graph.
    for source in (INPUT, *order):
        produced = spec.input if source == INPUT else classes[source].produces
        for kind in produced:
            if kind != ANY:
                pipeline.route(source, kind)
    return pipeline


def _reachable(start: str, children: Mapping[str, Iterable[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(children.get(start, ()))
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(children.get(name, ()))
    return seen


def _check_kinds_reach(
    spec: PipelineSpec,
    order: list[str],
    by_name: Mapping[str, Any],
    classes: Mapping[str, type[Node[Any]]],
    problems: list[str],
) -> None:
    """Every consumed kind must arrive from upstream (through non-consuming nodes)."""
    # arrive[n]: kinds that can reach n; passes[n]: kinds that leave n (emitted or passed by).
    passes: dict[str, set[str]] = {INPUT: set(spec.input)}
    for name in order:
        cls = classes[name]
        arrive: set[str] = set()
        for up in by_name[name].inputs:
            arrive |= passes[up]
        consumed = set(cls.consumes) | set(cls.accepts)
        produced = set(cls.produces)
        if ANY in produced:
            produced = (produced - {ANY}) | arrive
        for kind in sorted(set(cls.consumes) - {ANY}):
            if kind not in arrive:
                upstream = ", ".join(sorted(arrive)) or "nothing"
                problems.append(
                    f"node {name!r} ({by_name[name].type}) consumes {kind!r} but nothing upstream "
                    f"produces it (what reaches it: {upstream})"
                )
        passed = set() if ANY in consumed else arrive - consumed
        passes[name] = passed | produced
