"""Schema-guided decoding: the byte-level JSON-schema machine, the logits processor, and a
random tiny Llama that writes valid JSON only because the processor makes it."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from prompts import StructuredOutputError, StructuredStep, parse_as
from prompts.constrained import (
    JsonSchemaConstraint,
    JsonSchemaLogitsProcessor,
    JsonSchemaMachine,
    ParseState,
    TokenTable,
)

# ---------------------------------------------------------------- models


class Color(str, Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Inner(BaseModel):
    label: str
    values: list[int]


class Record(BaseModel):
    """Every supported construct: scalars, enums, nested objects, arrays, an optional."""

    name: str
    count: int
    ratio: float
    active: bool
    color: Color
    mode: Literal["fast", "fastest", "slow"]  # values that prefix each other
    inner: Inner
    items: list[Inner]
    flags: list[bool]
    note: str | None = None


Short = Annotated[str, Field(max_length=4)]


class Sub(BaseModel):
    tags: list[Literal["x", "yz"]] = Field(max_length=2)
    level: int


class Bounded(BaseModel):
    """Every string and list bounded, so every document the machine allows is finite."""

    word: Short
    n: int
    x: float
    flag: bool
    pick: Literal["a", "ab", "b"]
    maybe: Short | None
    xs: list[int] = Field(max_length=2)
    sub: Sub


RECORD = Record(
    name='Zoë "Q"\n\t\\',
    count=-42,
    ratio=1.5e-7,
    active=True,
    color=Color.GREEN,
    mode="fast",
    inner=Inner(label="", values=[0, -1, 10**18]),
    items=[Inner(label="a", values=[]), Inner(label="日本", values=[3])],
    flags=[],
    note=None,
)


def dumped(instance: BaseModel, **kwargs: Any) -> str:
    return json.dumps(instance.model_dump(mode="json", by_alias=True), **kwargs)


def feed_bytewise(machine: JsonSchemaMachine, text: str) -> ParseState:
    """Advance one byte at a time, failing at the first byte the machine rejects."""
    state = machine.initial
    data = text.encode("utf-8")
    for i, byte in enumerate(data):
        state = machine.step(state, byte)
        assert state, f"rejected at byte {i}: {data[: i + 1]!r}"
    return state


@pytest.fixture(scope="module")
def record_machine() -> JsonSchemaMachine:
    return JsonSchemaMachine(Record)


# ---------------------------------------------------------------- the machine


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"ensure_ascii": False}, {"indent": 2}, {"separators": (",", ":")}],
    ids=["default", "utf8", "indented", "compact"],
)
def test_serialised_instances_are_accepted_byte_by_byte(
    record_machine: JsonSchemaMachine, kwargs: dict[str, Any]
) -> None:
    text = dumped(RECORD, **kwargs)
    assert record_machine.is_complete(feed_bytewise(record_machine, text))


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "  {",
        '{"name": "Zo',
        '{"name": "\\u00e',
        '{"name": "x", "count": -',
        '{"name": "x", "count": 12, "ratio": 1.',
        '{"name": "x", "count": 12, "ratio": 1e',
        '{"name": "x", "count": 12, "ratio": 0.5, "active": tr',
        '{"name": "x", "count": 1, "ratio": 1, "active": false, "color": "gr',
        '{"name": "x", "count": 1, "ratio": 1, "active": false, "color": "red", "mode": "fast',
    ],
)
def test_valid_prefixes(record_machine: JsonSchemaMachine, prefix: str) -> None:
    assert record_machine.accepts_prefix(prefix)
    assert not record_machine.accepts(prefix)  # a prefix, not a document


HEAD = '{"name": "x", "count": 1, "ratio": 1, "active": false, "color": "red", "mode": "slow", '


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[", "the document is an object"),
        ('{"count": 1', "properties come in schema order"),
        ('{"nam": ', "unknown key"),
        ("{'name'", "single quotes"),
        ('{"name": 3', "a number where a string is expected"),
        ('{"name": "a\nb"', "raw newline inside a string"),
        ('{"name": "\\x"', "invalid escape"),
        ('{"name": "\\u12g', "invalid unicode escape"),
        ('{"name": "x",}', "trailing comma"),
        ('{"name": "x", "count": 01', "leading zero"),
        ('{"name": "x", "count": 1.5', "a fraction in an integer"),
        ('{"name": "x", "count": 1, "ratio": 1.e', "a digit must follow the point"),
        ('{"name": "x", "count": 1, "ratio": 1, "active": yes', "not a boolean"),
        ('{"name": "x", "count": 1, "ratio": 1, "active": true, "color": "pink"', "not in enum"),
        ('{"name": "x", "count": 1, "ratio": 1, "active": true, "color": "RED"', "enum case"),
        (HEAD + '"inner": {"label": "a", "values": [1,]', "trailing comma in array"),
        (HEAD + '"inner": {"label": "a", "values": ["1"]', "string item in an int array"),
        (HEAD + '"inner": {"label": "a", "values": []}, "items": [], "flags": [], "note": 0', "o"),
        (
            HEAD + '"inner": {"label": "a", "values": []}, "items": [], "flags": [], '
            '"note": null} ',
            "anything after the document",
        ),
        ('{"name": "x", "count": 1, "ratio": 1, "active": true, "color": "red"}', "missing keys"),
    ],
)
def test_invalid_texts_are_rejected(record_machine: JsonSchemaMachine, text: str, why: str) -> None:
    assert not record_machine.accepts_prefix(text), why


def test_invalid_utf8_and_control_bytes_are_rejected(record_machine: JsonSchemaMachine) -> None:
    head = b'{"name": "'
    for bad in (b"\xff", b"\xc0\xaf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90", b"\x01"):
        assert not record_machine.accepts_prefix(head + bad), bad
    assert record_machine.accepts_prefix(head + "é日😀".encode())


def test_whitespace_is_capped() -> None:
    machine = JsonSchemaMachine(Inner, max_whitespace=2)
    assert machine.accepts('{  "label"  :  "a"  ,  "values"  :  [  1  ,  2  ]  }')
    assert not machine.accepts_prefix("{   ")


def test_unions_enums_and_numbers_that_may_go_on() -> None:
    optional = JsonSchemaMachine({"anyOf": [{"type": "string"}, {"type": "null"}]})
    assert optional.accepts('"x"') and optional.accepts("null")
    assert not optional.accepts_prefix("nul ") and not optional.accepts_prefix("0")
    number = JsonSchemaMachine({"type": "integer"})
    state = number.advance(number.initial, b"12")
    assert number.is_complete(state) and number.advance(state, b"3")  # may end or go on
    assert not number.advance(state, b".")
    ints = JsonSchemaMachine({"enum": [1, 12]})
    assert ints.accepts("1") and ints.accepts("12") and not ints.accepts("123")
    mixed = JsonSchemaMachine({"type": ["integer", "boolean"]})
    assert mixed.accepts("-7") and mixed.accepts("true") and not mixed.accepts('"7"')


def test_lengths_and_item_counts_are_enforced() -> None:
    machine = JsonSchemaMachine(
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 2},
            "minItems": 1,
            "maxItems": 2,
        }
    )
    assert machine.accepts('["a", "\\u00e9\\n"]')
    assert machine.accepts('["\\ud83d\\ude00"]')  # a surrogate pair is one character
    assert not machine.accepts_prefix('["abc')
    assert not machine.accepts_prefix('[""')
    assert not machine.accepts_prefix("[]")
    assert not machine.accepts_prefix('["a", "b",')


def test_unsupported_schemas_fail_when_compiled() -> None:
    class Free(BaseModel):
        extra: dict[str, int]

    class Node(BaseModel):
        children: list[Node]

    class Pair(BaseModel):
        both: tuple[int, str]

    for model in (Free, Node, Pair):
        with pytest.raises(ValueError):
            JsonSchemaMachine(model)
    with pytest.raises(TypeError):
        JsonSchemaMachine(42)  # type: ignore[arg-type]


texts = st.text(max_size=12)
ints = st.integers(min_value=-(10**19) + 1, max_value=10**19 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
inners = st.builds(Inner, label=texts, values=st.lists(ints, max_size=3))
records = st.builds(
    Record,
    name=texts,
    count=ints,
    ratio=floats,
    active=st.booleans(),
    color=st.sampled_from(Color),
    mode=st.sampled_from(["fast", "fastest", "slow"]),
    inner=inners,
    items=st.lists(inners, max_size=3),
    flags=st.lists(st.booleans(), max_size=3),
    note=st.none() | texts,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    record=records,
    ensure_ascii=st.booleans(),
    layout=st.sampled_from([{}, {"indent": 2}, {"separators": (",", ":")}]),
)
def test_any_instance_serialised_is_accepted(
    record: Record, ensure_ascii: bool, layout: dict[str, Any]
) -> None:
    machine = JsonSchemaMachine(Record)
    text = dumped(record, ensure_ascii=ensure_ascii, **layout)
    state = feed_bytewise(machine, text)
    assert machine.is_complete(state)
    assert not machine.advance(state, b"}")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_whatever_the_machine_lets_through_validates(data: st.DataObject) -> None:
    """A random walk over allowed bytes always ends in JSON that pydantic accepts."""
    machine = JsonSchemaMachine(Bounded, max_whitespace=2)
    state, out = machine.initial, bytearray()
    while not machine.is_complete(state):
        allowed = [b for b in range(256) if machine.step(state, b)]
        assert allowed, f"dead end after {bytes(out)!r}"
        byte = data.draw(st.sampled_from(allowed))
        out.append(byte)
        state = machine.step(state, byte)
        assert len(out) < 2000
    Bounded.model_validate(json.loads(out.decode("utf-8")))


# ---------------------------------------------------------------- tokens and the processor

CORPUS = [
    '{"name": "Rex", "age": 3, "weight": 12.5, "vaccinated": true, "kind": "dog"}',
    '{"tags": ["a", "b"], "owner": {"name": "Ann", "phone": null}, "n": -0.5e-3}',
    "Reply with a JSON object. Describe the pet named Tom, a cat of 7 years.",
    'The quick brown fox jumps over the lazy dog. false, [1, 2], {"x": 0}',
]


@pytest.fixture(scope="module")
def json_llama(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A random tiny Llama whose BPE vocabulary covers JSON's characters."""
    from tiny_llama import build_tiny_llama

    from ragkit.generation import Generator

    folder: Path = build_tiny_llama(
        tmp_path_factory.mktemp("json-llama"), CORPUS, vocab_size=320, hidden_size=32, seed=3
    )
    return Generator(str(folder), device="cpu").warm_up()


def test_token_table_reads_exact_bytes(json_llama: Any) -> None:
    tokenizer = json_llama.tokenizer
    table = TokenTable.for_tokenizer(tokenizer)
    assert TokenTable.for_tokenizer(tokenizer) is table  # built once per tokenizer
    text = '{"name": "Tom", "n": [1, -2.5]}'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert b"".join(table.token_bytes[i] or b"" for i in ids) == text.encode()
    assert all(table.token_bytes[i] is None for i in tokenizer.all_special_ids)


def _processor(generator: Any, schema: Any, width: int, top_k: int = 4) -> Any:
    constraint = JsonSchemaConstraint.for_generator(schema, generator, top_k=top_k)
    return constraint(width)


def test_processor_masks_invalid_tokens_and_forces_eos(json_llama: Any) -> None:
    tokenizer = json_llama.tokenizer
    eos = tokenizer.eos_token_id
    prompt = tokenizer("Reply", add_special_tokens=False)["input_ids"]
    width = len(prompt)
    processor: JsonSchemaLogitsProcessor = _processor(json_llama, Inner, width)
    table, machine = processor.table, processor.machine
    vocab = len(tokenizer)
    open_brace = tokenizer.convert_tokens_to_ids("{")
    scores = torch.zeros((1, vocab))
    scores[0, tokenizer.convert_tokens_to_ids("x")] = 5.0  # the model's favourite is invalid
    out = processor(torch.tensor([prompt]), scores.clone())
    finite = set(torch.isfinite(out[0]).nonzero().flatten().tolist())
    expected = {
        i
        for i in range(vocab)
        if table.token_bytes[i] and machine.advance(machine.initial, table.token_bytes[i])
    }
    assert finite == expected and open_brace in finite and eos not in finite

    done = tokenizer('{"label": "a", "values": []}', add_special_tokens=False)["input_ids"]
    out = processor(torch.tensor([prompt + done]), torch.zeros((1, vocab)))
    assert torch.isfinite(out[0]).nonzero().flatten().tolist() == [eos]


def test_processor_checks_top_k_first_and_scans_only_when_needed(json_llama: Any) -> None:
    tokenizer = json_llama.tokenizer
    vocab = len(tokenizer)
    processor: JsonSchemaLogitsProcessor = _processor(json_llama, Inner, 0, top_k=2)
    scores = torch.zeros((1, vocab))
    scores[0, tokenizer.convert_tokens_to_ids("{")] = 3.0
    scores[0, tokenizer.convert_tokens_to_ids("x")] = 4.0
    out = processor(torch.zeros((1, 0), dtype=torch.long), scores)
    assert processor.full_scans == 0  # "{" was among the top 2: no scan
    assert torch.argmax(out[0]).item() == tokenizer.convert_tokens_to_ids("{")


def test_processor_leaves_finished_rows_alone_and_tracks_rows(json_llama: Any) -> None:
    tokenizer = json_llama.tokenizer
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    processor: JsonSchemaLogitsProcessor = _processor(json_llama, Inner, 1)
    brace = tokenizer.convert_tokens_to_ids("{")
    ids = torch.tensor([[eos, brace], [eos, eos]])  # row 1 already ended
    scores = torch.randn((2, vocab))
    out = processor(ids, scores.clone())
    assert torch.equal(out[1], scores[1])
    assert not torch.isfinite(out[0, brace])  # a second "{" is not valid


# ---------------------------------------------------------------- end to end, random model


class Owner(BaseModel):
    name: str = Field(max_length=6)
    phone: Annotated[str, Field(max_length=6)] | None


class Pet(BaseModel):
    name: str = Field(max_length=8)
    age: int
    weight: float
    vaccinated: bool
    kind: Literal["cat", "dog"]
    tags: list[Annotated[str, Field(max_length=4)]] = Field(max_length=3)
    owner: Owner


def test_random_model_writes_valid_json_when_constrained(json_llama: Any) -> None:
    prompt = "Describe the pet named Tom, a cat of 7 years."
    with pytest.raises(StructuredOutputError):  # unconstrained, a random model cannot
        parse_as(Pet, json_llama, prompt, retries=0, max_new_tokens=60)
    pet = parse_as(Pet, json_llama, prompt, retries=0, constrained=True, max_new_tokens=600)
    assert isinstance(pet, Pet)


def test_constrained_batches_and_sampling_all_validate(json_llama: Any) -> None:
    """Different prompt lengths in one batch (left padding) and sampled paths: all valid."""
    constraint = JsonSchemaConstraint.for_generator(Pet, json_llama)
    prompts = ["Tom", "Describe the pet named Tom, a cat of 7 years. Reply with a JSON object."]
    for options in ({}, {"do_sample": True, "temperature": 1.3, "seed": 5}):
        results = json_llama.generate(
            prompts, logits_processors=[constraint], max_new_tokens=600, **options
        )
        for result in results:
            assert result.finish_reason == "stop", result.text
            Pet.model_validate_json(result.text)


def test_structured_step_passes_constrained_on(json_llama: Any) -> None:
    step = StructuredStep(
        Owner, json_llama, retries=0, options={"max_new_tokens": 200}, constrained=True
    )
    result = step.run("Who owns the pet?")
    assert result.attempts == 1 and Owner.model_validate(result.data)


def test_constrained_needs_a_local_generator(scripted: Any) -> None:
    with pytest.raises(TypeError, match="tokenizer"):
        parse_as(Owner, scripted(['{"name": "a", "phone": null}']), "Who?", constrained=True)


def test_surrogate_escapes_must_pair() -> None:
    """Found by the random-walk property: a lone ``\\udc00`` parses to a string pydantic rejects."""
    from pydantic import BaseModel as _Base

    class Word(_Base):
        word: str

    machine = JsonSchemaMachine(Word)
    assert machine.accepts('{"word": "\\ud83d\\ude00"}')  # a pair: one character
    assert machine.accepts('{"word": "a\\u00e9"}')
    for bad in ('{"word": "\\udc00"}', '{"word": "\\ud83d"}', '{"word": "\\ud83dx"}'):
        assert not machine.accepts(bad), bad
