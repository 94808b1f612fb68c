"""The SSE decoder and line splitter, fed by hand: the WHATWG rules a streaming API relies on."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from rspp.providers.openai.sse import LineSplitter, SseDecoder, SseEvent


def decode(lines: list[str]) -> tuple[list[SseEvent], SseDecoder]:
    decoder = SseDecoder()
    events = [e for e in map(decoder.feed, lines) if e is not None]
    last = decoder.end()
    if last is not None:
        events.append(last)
    return events, decoder


def test_data_lines_accumulate_until_a_blank_line() -> None:
    events, _ = decode(["data: one", "data: two", "", "data: three", ""])
    assert events == [SseEvent(data="one\ntwo"), SseEvent(data="three")]


def test_comments_are_keep_alives_not_events() -> None:
    events, decoder = decode([": ping", "", ":", "data: x", ": ping in the middle", "", ": ping"])
    assert events == [SseEvent(data="x")]
    assert decoder.skipped == 0


def test_a_byte_order_mark_is_dropped_from_the_first_line_only() -> None:
    events, decoder = decode(["\ufeffdata: a", "", "\ufeffdata: b", ""])
    assert events == [SseEvent(data="a")]  # the second line's field is "\ufeffdata": unknown
    assert decoder.skipped == 1


def test_event_names_the_next_event_only() -> None:
    events, _ = decode(["event: error", "data: bad", "", "data: fine", ""])
    assert events == [SseEvent(data="bad", event="error"), SseEvent(data="fine")]


def test_unknown_fields_are_skipped_and_counted() -> None:
    events, decoder = decode(["garbage", "{not sse}", "dat: a", "data: kept", "x: y", ""])
    assert events == [SseEvent(data="kept")]
    assert decoder.skipped == 4


def test_end_dispatches_an_event_whose_blank_line_never_came() -> None:
    decoder = SseDecoder()
    assert decoder.feed("data: tail") is None
    assert decoder.end() == SseEvent(data="tail")
    assert decoder.end() is None


def test_one_space_after_the_colon_is_dropped_and_no_more() -> None:
    events, _ = decode(["data:tight", "", "data:  two spaces", "", "data", "", "data:", ""])
    assert [e.data for e in events] == ["tight", " two spaces", "", ""]


def test_a_blank_line_alone_dispatches_nothing() -> None:
    events, _ = decode(["", "", "event: lonely", "", "data: x", ""])
    assert events == [SseEvent(data="x")]  # the name was reset by the empty dispatch


def test_ids_persist_and_retry_is_parsed_only_from_ascii_digits() -> None:
    events, decoder = decode(["id: 7", "data: a", "", "data: b", "", "id: 8\0", "data: c", ""])
    assert [e.id for e in events] == ["7", "7", "7"]  # an id with NUL is ignored
    decoder = SseDecoder()
    for line in ("retry: 1500", "retry: soon", "retry: ²", "retry: ١٢"):
        decoder.feed(line)
    assert decoder.retry_ms == 1500


def test_the_splitter_ends_lines_at_crlf_lf_and_cr_only() -> None:
    splitter = LineSplitter()
    text = 'data: {"c": "a\u2028b\x85c\x0cd"}\r\ndata: x\rdata: y\n\n'
    assert splitter.feed(text.encode()) == [
        'data: {"c": "a\u2028b\x85c\x0cd"}',
        "data: x",
        "data: y",
        "",
    ]
    assert splitter.end() == []


def test_the_splitter_pairs_a_cr_and_lf_split_between_pieces() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"data: a\r") == ["data: a"]
    assert splitter.feed(b"\n") == []
    assert splitter.feed(b"\r") == [""]
    assert splitter.feed(b"\r\n") == [""]
    assert splitter.feed(b"\ndata: b") == [""]
    assert splitter.end() == ["data: b"]


def test_the_splitter_joins_a_character_split_between_pieces() -> None:
    splitter = LineSplitter()
    raw = "data: héllo €\n".encode()
    lines = [line for i in range(len(raw)) for line in splitter.feed(raw[i : i + 1])]
    assert lines == ["data: héllo €"]


def encode(events: list[tuple[str | None, str]], *, eol: str, keep_alive: bool) -> bytes:
    """Events as a server writes them: a ``data:`` line per line of data, a blank line after."""
    out = ["\ufeff"]
    for name, data in events:
        if keep_alive:
            out.append(f": ping{eol}")
        if name is not None:
            out.append(f"event: {name}{eol}")
        out += [f"data: {line}{eol}" for line in data.split("\n")]
        out.append(eol)
    return "".join(out).encode()


# Any text (U+2028 and friends included), line breaks too: they become several data lines.
_data = st.one_of(
    st.text().map(lambda s: s.replace("\r\n", "\n").replace("\r", "\n")),
    st.builds(json.dumps, st.dictionaries(st.text(), st.text()), ensure_ascii=st.booleans()),
)
_name = st.none() | st.text(min_size=1).filter(lambda s: not any(c in s for c in "\r\n"))


@given(
    events=st.lists(st.tuples(_name, _data), max_size=8),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    keep_alive=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_any_events_survive_encoding_and_any_chunking(
    events: list[tuple[str | None, str]], eol: str, keep_alive: bool, cuts: list[int]
) -> None:
    raw = encode(events, eol=eol, keep_alive=keep_alive)
    bounds = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    splitter, decoder = LineSplitter(), SseDecoder()
    got: list[SseEvent] = []
    for lo, hi in itertools.pairwise(bounds):
        got += [e for e in map(decoder.feed, splitter.feed(raw[lo:hi])) if e is not None]
    got += [e for e in map(decoder.feed, splitter.end()) if e is not None]
    tail = decoder.end()
    assert tail is None
    expected = [SseEvent(data=data, event=name or "message") for name, data in events]
    assert got == expected
    assert decoder.skipped == 0


@given(st.lists(st.text(), max_size=30))
def test_any_lines_never_crash_the_decoder(lines: list[str]) -> None:
    decoder = SseDecoder()
    for line in lines:
        event = decoder.feed(line)
        assert event is None or isinstance(event.data, str)
    decoder.end()
