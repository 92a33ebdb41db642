"""Streaming: pieces arrive while generating and concatenate to the non-streamed result."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragkit.generation import GenerationResult, Generator
from ragkit.generation.stopping import find_stop, held_back
from ragkit.generation.streaming import QueueStreamer, TextStream


@pytest.mark.parametrize("index", range(4))
def test_stream_concatenates_to_generate(
    tiny_generator: Generator,
    prompts: list[str],
    index: int,
    greedy_results: list[GenerationResult],
) -> None:
    prompt = prompts[index]
    expected = greedy_results[index]  # batched; equal to one-by-one (tested elsewhere)
    stream = tiny_generator.stream(prompt)
    pieces = list(stream)
    assert "".join(pieces) == expected.text
    assert len(pieces) > 1
    assert stream.result == expected


def test_stream_with_stop_string(
    tiny_generator: Generator, prompts: list[str], greedy_results: list[GenerationResult]
) -> None:
    results = greedy_results
    longest = max(results, key=lambda r: len(r.text))
    prompt = prompts[results.index(longest)]
    stop = longest.text[6:9]
    expected = tiny_generator.generate([prompt], stop=stop)[0]
    assert expected.finish_reason == "stop_string"
    stream = tiny_generator.stream(prompt, stop=stop)
    assert "".join(stream) == expected.text
    assert stream.result == expected


def test_stream_with_sampling_matches_generate_with_the_same_seed(
    tiny_generator: Generator,
) -> None:
    options = {"do_sample": True, "temperature": 1.3, "seed": 11}
    expected = tiny_generator.generate(["Tokens"], **options)[0]
    assert "".join(tiny_generator.stream("Tokens", **options)) == expected.text


def test_closing_a_stream_early_stops_the_worker(tiny_generator: Generator) -> None:
    stream = tiny_generator.stream("Paris is", max_new_tokens=200)
    first = next(stream)
    assert first
    stream.close()
    assert stream._thread is not None and not stream._thread.is_alive()
    assert list(stream) == []  # a closed stream is exhausted
    with tiny_generator.stream("Paris is") as again:
        next(again)
    assert again._thread is not None and not again._thread.is_alive()


def test_beam_search_cannot_stream(tiny_generator: Generator) -> None:
    with pytest.raises(ValueError, match="beam search"):
        tiny_generator.stream("Paris is", num_beams=2)


def test_worker_errors_reach_the_consumer() -> None:
    def run(streamer: QueueStreamer, is_cancelled: Callable[[], bool]) -> None:
        raise RuntimeError("out of memory")

    stream = TextStream(run, lambda ids: "", lambda ids: _result(""), (), frozenset())
    with pytest.raises(RuntimeError, match="out of memory"):
        next(stream)


# --- the streaming logic alone, on a byte-level fake "model" -------------------------------

EOS = 256


def _decode(ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def _result(text: str) -> GenerationResult:
    return GenerationResult(
        text=text, prompt_text="", prompt_tokens=0, completion_tokens=0, finish_reason="length"
    )


def _finish(stops: tuple[str, ...]) -> Callable[[list[int]], GenerationResult]:
    def finish(ids: list[int]) -> GenerationResult:
        end = ids.index(EOS) if EOS in ids else len(ids)
        text = _decode(ids[:end])
        match = find_stop(text, stops)
        return _result(text if match is None else text[: match[0]])

    return finish


def _chunks(text: str, chunk: int) -> list[list[int]]:
    data = [*text.encode("utf-8"), EOS]
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def _generated(text: str, stops: tuple[str, ...], chunk: int) -> list[int]:
    """What a model stopped by stop strings would emit: chunks up to the first one after
    which the decoded text contains a stop string (as the real stopping criterion does)."""
    sent: list[int] = []
    for piece in _chunks(text, chunk):
        sent.extend(piece)
        if find_stop(_decode(sent), stops) is not None:
            break
    return sent


def _fake_stream(text: str, stops: tuple[str, ...], chunk: int) -> TextStream:
    """Bytes of ``text`` arrive ``chunk`` at a time (splitting multi-byte characters), then EOS."""

    def run(streamer: QueueStreamer, is_cancelled: Callable[[], bool]) -> None:
        streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, which must be skipped
        sent: list[int] = []
        for piece in _chunks(text, chunk):
            if is_cancelled():
                return
            streamer.put(torch.tensor(piece))
            sent.extend(piece)
            if find_stop(_decode(sent), stops) is not None:
                return

    return TextStream(run, _decode, _finish(stops), stops, frozenset({EOS}))


TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufffd"),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=TEXT,
    stops=st.lists(TEXT.filter(bool).map(lambda s: s[:4]), max_size=3),
    chunk=st.integers(1, 5),
    data=st.data(),
)
def test_streamed_pieces_equal_the_cut_text(
    text: str, stops: list[str], chunk: int, data: st.DataObject
) -> None:
    if text and data.draw(st.booleans()):  # often use a stop string that really occurs
        i = data.draw(st.integers(0, len(text) - 1))
        stops = [*stops, text[i : i + data.draw(st.integers(1, 3))]]
    stop_tuple = tuple(dict.fromkeys(stops))
    expected = _finish(stop_tuple)(_generated(text, stop_tuple, chunk)).text
    if find_stop(text, stop_tuple) is None:
        assert expected == text
    stream = _fake_stream(text, stop_tuple, chunk)
    pieces = list(stream)
    assert "".join(pieces) == expected
    assert all(pieces)
    assert stream.result is not None and stream.result.text == expected
    for piece_end in range(1, len(pieces)):
        shown = "".join(pieces[:piece_end])
        assert not any(s in shown for s in stop_tuple)  # a stop string is never shown


def test_pieces_come_before_the_end_of_generation() -> None:
    """The consumer sees text while the worker is still blocked mid-generation."""
    release = threading.Event()

    def run(streamer: QueueStreamer, is_cancelled: Callable[[], bool]) -> None:
        streamer.put(torch.tensor([[0]]))
        streamer.put(torch.tensor(list(b"Hello ")))
        assert release.wait(timeout=10)
        streamer.put(torch.tensor([*b"world", EOS]))

    stream = TextStream(run, _decode, _finish(()), (), frozenset({EOS}))
    assert next(stream) == "Hello "
    release.set()
    assert list(stream) == ["world"]


@pytest.mark.parametrize(
    ("text", "stops", "held"),
    [
        ("answer: Par", ("Paris!",), 3),
        ("answer", ("\n\n",), 0),
        ("answer\n", ("\n\n",), 1),
        ("abc\ufffd", (), 1),
        ("x0\ufffd", ("0\x80",), 2),  # the pending character may complete the stop string
        ("ab", ("abc", "b"), 2),
    ],
)
def test_held_back(text: str, stops: tuple[str, ...], held: int) -> None:
    assert held_back(text, stops) == held


def test_find_stop_prefers_the_earliest_then_the_longest() -> None:
    assert find_stop("a STOP b END", ("END", "STOP")) == (2, "STOP")
    assert find_stop("xx\n\nyy", ("\n", "\n\n")) == (2, "\n\n")
    assert find_stop("nothing", ("zz",)) is None
