"""Templates: declared variables, sandbox, YAML round trip, token budgeting, the library."""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prompts import (
    RESERVED_NAMES,
    ChatTemplate,
    PromptBudgetError,
    PromptTemplate,
    TemplateSecurityError,
    TemplateVariableError,
    library_names,
    library_template,
    load_template,
    whitespace_tokens,
)

NAMES = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8).filter(
    lambda s: (
        s not in {"if", "in", "is", "or", "and", "not", "for", "true", "false", "none"}
        and s not in RESERVED_NAMES
    )  # e.g. `self`: Jinja's own (tested below)
)
VALUES = st.text(alphabet=string.ascii_letters + string.digits + " .,?!", max_size=30)


@settings(max_examples=60, deadline=None)
@given(values=st.dictionaries(NAMES, VALUES, min_size=1, max_size=5))
def test_declared_variables_render(values: dict[str, str]) -> None:
    source = " | ".join(f"{{{{ {name} }}}}" for name in values)
    template = PromptTemplate(template=source)
    assert sorted(template.variables) == sorted(values)
    assert template.render(**values) == " | ".join(values.values())


def test_names_jinja_reserves_are_refused_as_variables() -> None:
    """``{{ self }}`` renders the template object: a value passed as ``self`` would be ignored."""
    assert {"self", "range", "loop"} <= RESERVED_NAMES
    # raised inside pydantic validation: a ValidationError (a ValueError), like other build errors
    with pytest.raises(ValueError, match="'self' is a name Jinja reserves"):
        PromptTemplate(template="{{ self }}", variables=["self"])
    with pytest.raises(TemplateVariableError, match="'loop' is a name Jinja reserves"):
        PromptTemplate(template="{{ x }}").render(x="a", loop="b")
    with pytest.raises(ValueError, match="'range' is a name Jinja reserves"):
        PromptTemplate(template="{{ range }}", variables=["range"])


@settings(max_examples=40, deadline=None)
@given(declared=NAMES, extra=NAMES, value=VALUES)
def test_undeclared_variable_is_an_error_naming_it(declared: str, extra: str, value: str) -> None:
    template = PromptTemplate(template=f"{{{{ {declared} }}}}")
    if extra != declared:
        with pytest.raises(TemplateVariableError, match=repr(extra)):
            template.render(**{declared: value, extra: value})
    with pytest.raises(TemplateVariableError, match=repr(declared)):
        template.render()


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(VALUES, st.integers(), st.lists(st.integers(), max_size=3)),
    data=st.data(),
)
def test_sandbox_blocks_python_internals(value: object, data: st.DataObject) -> None:
    attribute = data.draw(st.sampled_from([a for a in dir(value) if a.startswith("_")]))
    template = PromptTemplate(template=f"{{{{ x.{attribute} }}}}")
    with pytest.raises(TemplateSecurityError, match="unsafe"):
        template.render(x=value)


def test_sandbox_blocks_the_classic_escape_and_mutation() -> None:
    with pytest.raises(TemplateSecurityError):
        PromptTemplate(template="{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
    with pytest.raises(TemplateSecurityError):
        PromptTemplate(template="{{ items.append(1) }}").render(items=[])


def test_template_using_an_undeclared_variable_is_rejected_at_build() -> None:
    # raised inside pydantic validation, so it arrives as a ValidationError (a ValueError)
    with pytest.raises(ValueError, match="undeclared variable 'b'"):
        PromptTemplate(template="{{ a }} {{ b }}", variables=["a"])


def test_yaml_round_trip(tmp_path: Path) -> None:
    chat = ChatTemplate(
        name="t",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "{{ q }}"},
        ],
    )
    chat.save(tmp_path / "t.yaml")
    loaded = load_template(tmp_path / "t.yaml")
    assert loaded == chat
    assert loaded.render(q="hi") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert not list(tmp_path.glob(".*.tmp"))


def test_library_has_the_issue_templates_and_they_render() -> None:
    assert {
        "grounded_qa",
        "context_qa",
        "summarize",
        "rewrite_query",
        "critique",
        "refine",
        "decompose",
        "answer_with_steps",
        "condense_question",
    } <= set(library_names())
    samples = {
        "question": "Q?",
        "passages": [{"n": 1, "text": "P."}],
        "context": "C.",
        "text": "T.",
        "max_words": 20,
        "task": "Do X.",
        "draft": "D.",
        "critique": "K.",
        "history": [{"role": "user", "content": "H."}],
        "steps": [{"question": "S?", "answer": "A."}],
        "max_subquestions": 3,
        "n": 3,
    }
    for name in library_names():
        template = library_template(name)
        rendered = template.render(**{v: samples[v] for v in template.variables})
        assert rendered
    assert "The context does not say." in str(
        library_template("context_qa").render(context="c", question="q")
    )
    with pytest.raises(KeyError, match="grounded_qa"):
        library_template("nope")


def test_grounded_qa_keeps_the_variables_ragkit_uses() -> None:
    assert set(library_template("grounded_qa").variables) == {"question", "passages"}
    assert set(library_template("condense_question").variables) == {"history", "question"}


def test_render_within_drops_lowest_ranked_items_first() -> None:
    template = PromptTemplate(
        template="Q: {{ question }}\n{% for p in passages %}[{{ p }}] {% endfor %}"
    )
    passages = [f"passage number {i} with words" for i in range(6)]
    full = whitespace_tokens(template.render(question="why", passages=passages))
    fitted = template.render_within(
        full - 10, whitespace_tokens, "passages", question="why", passages=passages
    )
    assert fitted.items == passages[: len(fitted.items)]
    assert fitted.report.dropped == list(range(len(fitted.items), 6))
    assert 0 < len(fitted.items) < 6
    assert fitted.report.tokens <= full - 10
    assert "passage number 5" not in fitted.prompt
    assert "dropped" in fitted.report.note
    untouched = template.render_within(
        full, whitespace_tokens, "passages", question="why", passages=passages
    )
    assert untouched.report.dropped == [] and untouched.report.note == ""


def test_render_within_fails_when_the_fixed_part_is_too_long() -> None:
    template = ChatTemplate(
        messages=[
            {"role": "user", "content": "{{ question }} {% for p in passages %}{{ p }}{% endfor %}"}
        ]
    )
    with pytest.raises(PromptBudgetError, match="without any 'passages'"):
        template.render_within(2, whitespace_tokens, "passages", question="a b c d", passages=["x"])
    with pytest.raises(TemplateVariableError):
        template.render_within(9, whitespace_tokens, "nope", question="q", passages=[])


def test_prompts_imports_nothing_from_ragkit() -> None:
    code = (
        "import sys, prompts\n"
        "t = prompts.PromptTemplate(template='{{ a }}')\n"
        "import tempfile, pathlib\n"
        "t.save(pathlib.Path(tempfile.mkdtemp()) / 't.yaml')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in {'ragkit', 'torch', 'transformers'}]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
