"""Next-token choice from raw logits: each option changes the choice the way transformers does."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.generation import GenerationOptions
from ragkit.generation.chat_template import ChatTemplateError, TemplateTokenizer
from ragkit.generation.constraints import AllowedTokens
from ragkit.generation.token_choice import choose_token

GREEDY = GenerationOptions()


class OnlyAllowed:
    def __init__(self, ids: list[int], bias: dict[int, float] | None = None) -> None:
        self.ids, self.bias = ids, bias or {}

    def allowed(self, generated: object) -> AllowedTokens:
        return AllowedTokens(ids=self.ids, bias=self.bias)


def choose(logits: list[float], opts: GenerationOptions = GREEDY, **kw: object) -> int:
    defaults: dict[str, object] = {"sequence": [], "generated": [], "eos_ids": {0}}
    defaults.update(kw)
    return choose_token(np.asarray(logits, dtype=np.float32), opts, **defaults)  # type: ignore[arg-type]


def test_greedy_is_argmax_and_does_not_touch_the_input() -> None:
    logits = np.asarray([0.0, 3.0, 1.0], dtype=np.float32)
    assert choose_token(logits, GREEDY, sequence=[], generated=[], eos_ids={0}) == 1
    assert logits.tolist() == [0.0, 3.0, 1.0]


def test_repetition_penalty_divides_seen_positive_and_multiplies_seen_negative() -> None:
    opts = GenerationOptions(repetition_penalty=2.0)
    assert choose([0.0, 3.0, 2.0], opts, sequence=[1]) == 2  # 3/2 < 2
    assert choose([-1.0, -1.5, -2.5], opts, sequence=[0]) == 1  # -1*2 < -1.5


def test_no_repeat_ngram_blocks_the_token_that_would_repeat() -> None:
    opts = GenerationOptions(no_repeat_ngram_size=2)
    # "1 2 ... 1" -> 2 would repeat the bigram (1, 2)
    assert choose([0.0, 0.0, 5.0, 1.0], opts, sequence=[1, 2, 3, 1]) == 3


def test_min_new_tokens_suppresses_eos_until_reached() -> None:
    opts = GenerationOptions(min_new_tokens=2)
    assert choose([9.0, 1.0], opts, generated=[5]) == 1
    assert choose([9.0, 1.0], opts, generated=[5, 6]) == 0


def test_a_constraint_masks_and_biases() -> None:
    assert choose([0.0, 5.0, 1.0, 2.0], constraint=OnlyAllowed([2, 3])) == 3
    assert choose([0.0, 5.0, 1.0, 2.0], constraint=OnlyAllowed([2, 3], {2: 4.0})) == 2


def test_top_k_one_sampling_is_greedy_and_needs_a_generator() -> None:
    opts = GenerationOptions(do_sample=True, top_k=1)
    rng = np.random.default_rng(0)
    assert all(choose([0.0, 1.0, 0.5], opts, rng=rng) == 1 for _ in range(20))
    with pytest.raises(ValueError, match="random generator"):
        choose([0.0, 1.0], opts)


def test_top_p_keeps_only_the_nucleus() -> None:
    opts = GenerationOptions(do_sample=True, top_p=0.5)
    rng = np.random.default_rng(0)
    draws = {choose([5.0, 4.0, 0.0, 0.0], opts, rng=rng) for _ in range(50)}
    assert draws == {0}  # token 0 alone holds > 50% of the mass


def test_chat_template_renders_in_a_sandbox() -> None:
    template = TemplateTokenizer(
        "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}",
        bos_token="<s>",
    )
    text = template.apply_chat_template([{"role": "user", "content": "{{ 7*7 }}"}])
    assert text == "<s><user>{{ 7*7 }}<assistant>"  # message text is data, never a template
    hostile = TemplateTokenizer("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError):
        hostile.apply_chat_template([{"role": "user", "content": "x"}])
    refusing = TemplateTokenizer("{{ raise_exception('only user turns') }}")
    with pytest.raises(ChatTemplateError, match="refused the prompt: only user turns"):
        refusing.apply_chat_template([{"role": "user", "content": "x"}])
