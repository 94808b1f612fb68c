"""Pipeline specs (rspp.kernel.spec) and building them (graph, registry, node contract)."""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from rspp.events import Event
from rspp.kernel import (
    INPUT,
    BuildError,
    Node,
    NodeConfig,
    NodeRegistry,
    NodeSpec,
    PipelineSpec,
    Policy,
    QueueSpec,
    build,
    load_spec,
)
from rspp.nodes.energy_vad import EnergyVadConfig

# -- test node types (registered only in a private registry) ------------------------------


class _Inline(Node[NodeConfig]):
    def on_event(self, event: Event) -> None:
        self.emit(event)


class Source(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("audio.in",)
    produces: ClassVar[tuple[str, ...]] = ("test.a", "test.b")


class EatsA(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("test.a",)
    produces: ClassVar[tuple[str, ...]] = ("test.c",)


class EatsB(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("test.b",)


class EatsBC(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("test.b", "test.c")


class EatsC(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("test.c",)


class Tap(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("*",)


class Opaque(_Inline):
    """Consumes nothing and produces nothing: everything passes it by."""


class EatsInterrupt(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("control.interrupt",)


class Streamer(Node[NodeConfig]):
    consumes: ClassVar[tuple[str, ...]] = ("audio.in",)
    produces: ClassVar[tuple[str, ...]] = ("test.a",)

    async def stream(self, event: Event) -> AsyncIterator[Event]:
        yield event


class NoHandler(Node[NodeConfig]):
    consumes: ClassVar[tuple[str, ...]] = ("audio.in",)


class TunedConfig(NodeConfig):
    gain: float = 1.0


class Tuned(_Inline):
    consumes: ClassVar[tuple[str, ...]] = ("audio.in",)
    Config = TunedConfig


def registry() -> NodeRegistry:
    reg = NodeRegistry()
    for name, cls in {
        "source": Source,
        "eats_a": EatsA,
        "eats_b": EatsB,
        "eats_bc": EatsBC,
        "eats_c": EatsC,
        "tap": Tap,
        "opaque": Opaque,
        "eats_interrupt": EatsInterrupt,
        "streamer": Streamer,
        "no_handler": NoHandler,
        "tuned": Tuned,
    }.items():
        reg.register(name)(cls)
    return reg


def spec(*nodes: NodeSpec, input: list[str] | None = None) -> PipelineSpec:
    return PipelineSpec(name="t", nodes=list(nodes), input=input or ["audio.in"])


def node(name: str, type: str, *inputs: str, **kw: object) -> NodeSpec:
    return NodeSpec(name=name, type=type, inputs=list(inputs), **kw)  # type: ignore[arg-type]


def problems_of(s: PipelineSpec, reg: NodeRegistry | None = None) -> list[str]:
    with pytest.raises(BuildError) as info:
        build(s, reg)
    return info.value.problems


def one_problem_with(problems: list[str], *parts: str) -> str:
    hits = [p for p in problems if all(part in p for part in parts)]
    assert len(hits) == 1, (parts, problems)
    return hits[0]


# -- loading ------------------------------------------------------------------------------

TOML = """
name = "echo"
version = 3
input = ["audio.in"]

[audio]
sample_rate = 8000

[[nodes]]
name = "vad"
type = "energy_vad"
inputs = ["input"]
config = { threshold_db = -40 }
queued = true
queue = { capacity = 5, policy = { "audio.in" = "drop_newest" } }

[[nodes]]
name = "tap"
type = "passthrough"
inputs = ["vad"]
sink = "client"
"""

YAML = """
name: echo
version: 3
input: [audio.in]
audio:
  sample_rate: 8000
nodes:
  - name: vad
    type: energy_vad
    inputs: [input]
    config: {threshold_db: -40}
    queued: true
    queue: {capacity: 5, policy: {audio.in: drop_newest}}
  - name: tap
    type: passthrough
    inputs: [vad]
    sink: client
"""


def _check_echo(s: PipelineSpec) -> None:
    assert s.name == "echo"
    assert s.version == 3
    assert s.input == ["audio.in"]
    assert (s.audio.sample_rate, s.audio.channels) == (8000, 1)
    vad, tap = s.nodes
    assert (vad.name, vad.type, vad.inputs) == ("vad", "energy_vad", ["input"])
    assert vad.config == {"threshold_db": -40}
    assert vad.queued is True
    assert vad.queue.capacity == 5
    assert vad.queue.policy == {"audio.in": Policy.DROP_NEWEST}
    assert vad.sink is None
    assert (tap.inputs, tap.sink, tap.queued, tap.config) == (["vad"], "client", None, {})
    assert tap.queue.capacity == 64


def test_load_toml_text() -> None:
    _check_echo(load_spec("x.toml", text=TOML, format="toml"))


def test_load_yaml_text() -> None:
    _check_echo(load_spec("x.yaml", text=YAML, format="yaml"))


def test_format_follows_the_suffix(tmp_path: Path) -> None:
    _check_echo(load_spec("x.yml", text=YAML))
    _check_echo(load_spec("x.toml", text=TOML))
    (tmp_path / "p.yaml").write_text(YAML)
    (tmp_path / "p.toml").write_text(TOML)
    _check_echo(load_spec(tmp_path / "p.yaml"))
    _check_echo(load_spec(str(tmp_path / "p.toml")))


def test_loaded_spec_builds() -> None:
    pipeline = build(load_spec("x.toml", text=TOML, format="toml"))
    plans = {p.name: p for p in pipeline.nodes}
    assert [p.name for p in pipeline.nodes] == ["vad", "tap"]
    vad = plans["vad"]
    assert isinstance(vad.config, EnergyVadConfig)
    assert vad.config.threshold_db == -40.0
    assert vad.queued and vad.capacity == 5
    assert vad.policy("audio.in", "drop_oldest") is Policy.DROP_NEWEST
    assert vad.policy("turn.start", "latest") is Policy.LATEST
    assert vad.downstream == frozenset({"tap"})
    assert plans["tap"].sink == "client"
    assert not plans["tap"].queued


def test_missing_file_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="cannot read pipeline spec"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "fmt", "fragments"),
    [
        (
            'name = "x"\n[[nodes]]\nname = "a"\ntype = "passthrough"\nbogus = 1\n',
            "toml",
            ["bogus", "$.nodes[0]"],
        ),
        ('name = "x"\n[[nodes]]\nname = "a"\ntype = 3\n', "toml", ["$.nodes[0].type"]),
        (
            'name = "x"\n[[nodes]]\nname = "a"\ntype = "t"\nqueue = { capacity = "big" }\n',
            "toml",
            ["$.nodes[0].queue.capacity"],
        ),
        ('name = "x"\n', "toml", ["nodes"]),
        (
            "name: x\nnodes:\n  - name: a\n    type: t\n  - name: b\n    type: t\n"
            "    queue: {policy: {audio.in: sometimes}}\n",
            "yaml",
            ["$.nodes[1].queue.policy"],
        ),
        ("name: x\nnodes: 7\n", "yaml", ["$.nodes"]),
        ("name = [\n", "toml", ["not valid TOML"]),
        ("name: [x\n", "yaml", ["not valid YAML"]),
    ],
)
def test_shape_errors_name_the_location(text: str, fmt: str, fragments: list[str]) -> None:
    with pytest.raises(BuildError) as info:
        load_spec(f"where.{fmt}", text=text, format=fmt)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    assert problem.startswith("where.")
    for fragment in fragments:
        assert fragment in problem


# -- build problems -----------------------------------------------------------------------


def test_demo_spec_builds() -> None:
    resource = importlib.resources.files("rspp.pipelines") / "demo.toml"
    s = load_spec("demo.toml", text=resource.read_text(), format="toml")
    pipeline = build(s)
    names = [p.name for p in pipeline.nodes]
    assert sorted(names) == sorted(n.name for n in s.nodes)
    position = {n: i for i, n in enumerate(names)}
    for n in s.nodes:
        for up in n.inputs:
            if up != INPUT:
                assert position[up] < position[n.name]
    assert pipeline.route(INPUT, "audio.in") == ("vad", "asr")
    assert pipeline.route("llm", "llm.delta") == ("tts",)


def test_unknown_node_type_lists_known_types() -> None:
    reg = registry()
    problem = one_problem_with(problems_of(spec(node("a", "nosuch", INPUT)), reg), "'a'")
    assert "unknown node type 'nosuch'" in problem
    for known in ("eats_a", "source", "tap", "tuned"):
        assert known in problem


def test_unknown_node_type_in_the_default_registry() -> None:
    problem = one_problem_with(problems_of(spec(node("a", "nosuch", INPUT))), "nosuch")
    for known in ("energy_vad", "fake_tts", "passthrough"):
        assert known in problem


def test_lazy_type_that_is_not_a_node_is_reported() -> None:
    reg = NodeRegistry({"bad": "pathlib:Path", "gone": "rspp.no_such_module:X"})
    problems = problems_of(spec(node("a", "bad", INPUT), node("b", "gone", INPUT)), reg)
    one_problem_with(problems, "'a'", "failed to load")
    one_problem_with(problems, "'b'", "failed to load")


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"threshold": -40}, "threshold"),
        ({"threshold_db": "loud"}, "$.threshold_db"),
        ({"interrupt": "yes"}, "$.interrupt"),
    ],
)
def test_bad_config(config: dict[str, object], fragment: str) -> None:
    problems = problems_of(spec(node("vad", "energy_vad", INPUT, config=config)))
    problem = one_problem_with(problems, "'vad'", "bad config for 'energy_vad'")
    assert fragment in problem


def test_config_ints_convert_to_floats() -> None:
    pipeline = build(spec(node("vad", "energy_vad", INPUT, config={"start_ms": 40})))
    config = pipeline.nodes[0].config
    assert isinstance(config, EnergyVadConfig)
    assert config.start_ms == 40.0
    assert config.hangover_ms == 300.0


def test_all_wiring_problems_are_reported_together() -> None:
    s = spec(
        node("a", "nosuch", INPUT),
        node("vad", "energy_vad", INPUT, config={"nope": 1}),
        node("b", "tap", "ghost"),
        node("input", "tap", "c"),
        node("c", "tap", INPUT),
        node("c", "tap", INPUT),
        node("lonely", "tap"),
        node("self", "tap", "self"),
        node("s", "streamer", INPUT, queued=False),
        node("small", "tap", INPUT, queue=QueueSpec(capacity=0)),
    )
    reg = registry()
    reg.add_lazy("energy_vad", "rspp.nodes.energy_vad:EnergyVad")
    problems = problems_of(s, reg)
    one_problem_with(problems, "'a'", "unknown node type")
    one_problem_with(problems, "'vad'", "bad config", "nope")
    one_problem_with(problems, "'b'", "'ghost'", "not a node of this pipeline")
    one_problem_with(problems, "'input'", "reserved")
    one_problem_with(problems, "'c'", "duplicate")
    one_problem_with(problems, "'lonely'", "no inputs")
    one_problem_with(problems, "'self'", "wired to itself")
    one_problem_with(problems, "'s'", "streaming node always runs queued")
    one_problem_with(problems, "'small'", "capacity")
    assert len(problems) == 9


def test_cycle() -> None:
    s = spec(
        node("head", "source", INPUT),
        node("x", "tap", "head", "z"),
        node("y", "tap", "x"),
        node("z", "tap", "y"),
    )
    problem = one_problem_with(problems_of(s, registry()), "cycle")
    for name in ("x", "y", "z"):
        assert name in problem


def test_empty_pipeline() -> None:
    one_problem_with(problems_of(spec()), "has no nodes")


def test_reserved_star_name() -> None:
    one_problem_with(problems_of(spec(node("*", "tap", INPUT)), registry()), "reserved")


def test_consumed_kind_nothing_upstream_produces() -> None:
    problems = problems_of(spec(node("speaker", "fake_tts", INPUT)))
    problem = one_problem_with(problems, "'speaker'", "'llm.delta'")
    assert "fake_tts" in problem
    assert "nothing upstream produces it" in problem
    assert "audio.in" in problem  # what does reach it
    one_problem_with(problems, "'speaker'", "'llm.done'")
    assert len(problems) == 2


def test_a_kind_produced_downstream_does_not_count() -> None:
    # eats_c is upstream of eats_a, which produces test.c: test.c never reaches eats_c.
    s = spec(
        node("src", "source", INPUT),
        node("c", "eats_c", "src"),
        node("a", "eats_a", "c"),
    )
    one_problem_with(problems_of(s, registry()), "'c'", "'test.c'")


def test_kinds_pass_through_non_consuming_nodes_at_build_time() -> None:
    s = spec(
        node("src", "source", INPUT),
        node("o", "opaque", "src"),
        node("a", "eats_a", "o"),
        node("b", "eats_bc", "a"),  # test.b from src passes through o and a; test.c from a
    )
    build(s, registry())


def test_a_consumed_kind_does_not_pass_on() -> None:
    # eats_a consumes test.a, so test.a does not reach the second eats_a behind it.
    s = spec(node("src", "source", INPUT), node("a1", "eats_a", "src"), node("a2", "eats_a", "a1"))
    one_problem_with(problems_of(s, registry()), "'a2'", "'test.a'")


def test_control_kind_in_consumes() -> None:
    problems = problems_of(spec(node("ctl", "eats_interrupt", INPUT)), registry())
    problem = one_problem_with(problems, "'ctl'", "control kind")
    assert "'control.interrupt'" in problem
    assert "controls" in problem


def test_control_kind_as_pipeline_input() -> None:
    s = spec(node("t", "tap", INPUT), input=["audio.in", "control.cancel"])
    one_problem_with(problems_of(s, registry()), "'control.cancel'", "control kind")


def test_consumer_without_handler() -> None:
    one_problem_with(problems_of(spec(node("n", "no_handler", INPUT)), registry()), "no handler")


def test_streaming_node_with_queued_false_from_toml() -> None:
    text = 'name = "s"\n[[nodes]]\nname = "gen"\ntype = "streamer"\ninputs = ["input"]\n'
    pipeline = build(load_spec("s.toml", text=text, format="toml"), registry())
    assert pipeline.nodes[0].queued  # the type decides: streaming nodes are queued
    bad = load_spec("s.toml", text=text + "queued = false\n", format="toml")
    problem = one_problem_with(problems_of(bad, registry()), "'gen'")
    assert "streaming" in problem and "queued" in problem


def test_inline_node_queued_on_request() -> None:
    reg = registry()
    assert not build(spec(node("t", "tuned", INPUT)), reg).nodes[0].queued
    assert build(spec(node("t", "tuned", INPUT, queued=True)), reg).nodes[0].queued


def test_private_registry_does_not_know_builtin_types() -> None:
    problem = one_problem_with(problems_of(spec(node("v", "energy_vad", INPUT)), registry()), "v")
    assert "unknown node type 'energy_vad'" in problem


# -- the node contract ------------------------------------------------------------------


def test_node_with_both_handlers_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="both on_event and stream"):

        class Both(Node[NodeConfig]):
            def on_event(self, event: Event) -> None:
                pass

            async def stream(self, event: Event) -> AsyncIterator[Event]:
                yield event


def test_handler_inherited_from_a_base_counts() -> None:
    with pytest.raises(TypeError):

        class Both(Streamer):
            def on_event(self, event: Event) -> None:
                pass


def test_node_flags() -> None:
    assert Streamer.streaming and Streamer.handles_events()
    assert not Source.streaming and Source.handles_events()
    assert not NoHandler.handles_events()


def test_registry_refuses_a_second_class_for_a_name() -> None:
    reg = registry()
    reg.register("tap")(Tap)  # the same class again is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.register("tap")(Opaque)


# -- routing ------------------------------------------------------------------------------


def routing_pipeline() -> tuple[object, list[str]]:
    """src -> a(eats_a) -> bc(eats_bc); src -> tap(*); src -> o(opaque) -> b(eats_b)."""
    s = spec(
        node("src", "source", INPUT),
        node("a", "eats_a", "src"),
        node("bc", "eats_bc", "a"),
        node("tap", "tap", "src"),
        node("o", "opaque", "src"),
        node("b", "eats_b", "o"),
    )
    pipeline = build(s, registry())
    return pipeline, [p.name for p in pipeline.nodes]


def test_route_looks_through_non_consumers() -> None:
    pipeline = build(
        spec(
            node("src", "source", INPUT),
            node("o", "opaque", "src"),
            node("a", "eats_a", "o"),
            node("bc", "eats_bc", "a"),
        ),
        registry(),
    )
    assert pipeline.route("src", "test.a") == ("a",)
    assert pipeline.route("src", "test.b") == ("bc",)  # through o and a
    assert pipeline.route("a", "test.c") == ("bc",)
    assert pipeline.route(INPUT, "audio.in") == ("src",)
    assert pipeline.route("bc", "test.c") == ()


def test_route_star_consumers_get_everything() -> None:
    pipeline, order = routing_pipeline()
    route_a = pipeline.route("src", "test.a")  # type: ignore[attr-defined]
    assert set(route_a) == {"a", "tap"}
    route_b = pipeline.route("src", "test.b")  # type: ignore[attr-defined]
    assert set(route_b) == {"bc", "tap", "b"}
    for route in (route_a, route_b):
        assert list(route) == sorted(route, key=order.index)


def test_route_of_an_unknown_kind_is_computed_on_first_use_and_cached() -> None:
    pipeline, _ = routing_pipeline()
    key = ("src", "app.new_kind")
    assert key not in pipeline._static_routes  # type: ignore[attr-defined]
    first = pipeline.route(*key)  # type: ignore[attr-defined]
    assert first == ("tap",)  # only "*" consumers take a kind nobody declares
    assert pipeline._static_routes[key] == first  # type: ignore[attr-defined]
    assert pipeline.route(*key) is first  # type: ignore[attr-defined]
    # The declared kinds were routed at build time.
    assert ("src", "test.a") in pipeline._static_routes  # type: ignore[attr-defined]
    assert (INPUT, "audio.in") in pipeline._static_routes  # type: ignore[attr-defined]


def test_route_unknown_kind_passes_by_non_star_nodes() -> None:
    pipeline = build(
        spec(node("src", "source", INPUT), node("a", "eats_a", "src"), node("t", "tap", "a")),
        registry(),
    )
    assert pipeline.route(INPUT, "app.other") == ("t",)


def test_routes_come_out_in_topological_order() -> None:
    # src -> o (opaque) -> late (inputs o and early); src -> early. A depth-first walk
    # from src can find `late` (through o) before `early`; the route must not.
    s = spec(
        node("src", "source", INPUT),
        node("o", "opaque", "src"),
        node("late", "eats_b", "o", "early"),
        node("early", "eats_b", "src"),
    )
    pipeline = build(s, registry())
    order = [p.name for p in pipeline.nodes]
    assert order.index("early") < order.index("late")
    assert pipeline.route("src", "test.b") == ("early", "late")


def test_a_node_reached_twice_is_routed_once() -> None:
    s = spec(
        node("src", "source", INPUT),
        node("o1", "opaque", "src"),
        node("o2", "opaque", "src"),
        node("join", "eats_b", "o1", "o2"),
    )
    assert build(s, registry()).route("src", "test.b") == ("join",)


def test_children_and_downstream() -> None:
    pipeline, _ = routing_pipeline()
    children = pipeline.children  # type: ignore[attr-defined]
    assert children[INPUT] == ("src",)
    assert set(children["src"]) == {"a", "tap", "o"}
    plans = {p.name: p for p in pipeline.nodes}  # type: ignore[attr-defined]
    assert plans["src"].downstream == frozenset({"a", "bc", "tap", "o", "b"})
    assert plans["a"].downstream == frozenset({"bc"})
    assert plans["b"].downstream == frozenset()


def test_a_cycle_is_reported_alongside_other_problems() -> None:
    s = spec(
        node("a", "nosuch", INPUT),
        node("x", "tap", INPUT, "y"),
        node("y", "tap", "x"),
    )
    problems = problems_of(s, registry())
    one_problem_with(problems, "'a'", "unknown node type")
    one_problem_with(problems, "cycle", "x", "y")
