"""The RSPP test kit: a virtual clock, a scripted caller, a recording sink, fake models.

It ships with the library (as ``trio.testing`` and ``starlette.testclient``
do) so that applications test their pipelines the way the kernel is tested.
"""

from rspp.testing.audio import silence, speech_like, tone, wav_bytes
from rspp.testing.caller import ScriptedCaller, Spoken, Utterance
from rspp.testing.clock import VirtualClock, run_virtual
from rspp.testing.fakes import FakeAsr, FakeLlm, FakeLlmStream, FakeTts, tick
from rspp.testing.sinks import RecordingSink

__all__ = [
    "FakeAsr",
    "FakeLlm",
    "FakeLlmStream",
    "FakeTts",
    "RecordingSink",
    "ScriptedCaller",
    "Spoken",
    "Utterance",
    "VirtualClock",
    "run_virtual",
    "silence",
    "speech_like",
    "tick",
    "tone",
    "wav_bytes",
]
