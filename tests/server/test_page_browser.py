"""The chat page in a real headless Chromium: ask, watch the stream, open a citation, give feedback.

The API tests prove the endpoints; only a browser proves the page's JavaScript glues them together
(SSE parsing of a ``fetch`` body, citation buttons, feedback posts, the compare flow) under the
page's own Content-Security-Policy. The app runs under uvicorn on a free loopback port with the
tiny random Llama and the four-document index from ``conftest.py``: the answers are gibberish, but
they are really generated, streamed and recorded. Feedback is read back from the server's
:class:`~ragkit.feedback.FeedbackStore`, so the test checks what was stored, not what the page says.

Playwright drives the distribution's Chromium (it cannot download its own browser offline); the
test is skipped when either is missing. A screenshot of the finished page is written to
``$RAGKIT_TEST_ARTIFACTS`` (default: the test's ``tmp_path``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_server import live_server

from ragkit.feedback import FeedbackStore

QUESTION = "What is the capital of France?"
TIMEOUT_MS = 30_000
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Records every text the answer element shows while it has the "streaming" class. A
# MutationObserver sees each `answer.textContent = text` of the page's delta handler as its own
# record, even when several deltas arrive in one network read, so the check cannot race a fast
# model. Records come in batches after the fact, so whether a text was shown while streaming is
# read from the order of the records (class changes carry the old value), not from the element.
WATCH_STREAM = """() => {
  window.__streamed = [];
  let streaming = null;
  const ended = new WeakSet();  // a later no-op classList.remove also makes a record
  new MutationObserver((records) => {
    for (const r of records) {
      const el = r.target;
      if (!(el instanceof HTMLElement) || !el.classList.contains("a") || ended.has(el)) continue;
      if (r.type === "attributes") {
        const was = (r.oldValue || "").split(" ").includes("streaming");
        if (was) ended.add(el);
        streaming = was ? null : el;
      } else if (streaming === el) {
        for (const node of r.addedNodes) {
          if (node.nodeType === Node.TEXT_NODE) window.__streamed.push(node.data);
        }
      }
    }
  }).observe(document.getElementById("turns"), {
    childList: true, subtree: true, attributeFilter: ["class"], attributeOldValue: true,
  });
}"""


def chromium_path() -> str | None:
    """The system Chromium: the Debian path first, then whatever ``chromium`` is on PATH."""
    default = Path("/usr/bin/chromium")
    return str(default) if default.exists() else shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no system Chromium (/usr/bin/chromium or `chromium` on PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright is not importable: {exc}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def site(
    server_rag: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, FeedbackStore]]:
    """A live server with a feedback store the test can read; yields (base URL, store)."""
    from ragkit.server import ServerSettings, create_app

    with FeedbackStore(tmp_path_factory.mktemp("page-feedback") / "feedback.db") as store:
        app = create_app(server_rag, ServerSettings(rate_limit_per_minute=None), store=store)
        with live_server(app) as base:
            yield base, store


@pytest.fixture
def page(browser: Any, site: tuple[str, FeedbackStore]) -> Iterator[Any]:
    """A fresh page on ``/``; fails the test on any script error or console error."""
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    response = tab.goto(site[0] + "/")
    assert response is not None and response.ok
    assert tab.title() == "ragkit"
    yield tab
    context.close()
    assert not problems, problems


def artifact_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RAGKIT_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def ask(page: Any, question: str) -> tuple[Any, list[str]]:
    """Ask through the form; return the finished turn and the texts shown while streaming."""
    page.evaluate(WATCH_STREAM)
    turns = page.locator("#turns > .turn")
    before = turns.count()
    page.fill("#question", question)
    page.click("#ask")
    page.wait_for_function(f"document.querySelectorAll('#turns > .turn').length > {before}")
    turn = turns.first  # the page puts the newest turn on top
    turn.locator(".actions").wait_for()  # vote buttons appear once the answer event arrived
    assert turn.locator(".q").inner_text() == question
    streamed: list[str] = page.evaluate("window.__streamed")
    return turn, streamed


def test_ask_stream_cite_vote_screenshot(
    page: Any, site: tuple[str, FeedbackStore], tmp_path: Path
) -> None:
    _, store = site
    turn, streamed = ask(page, QUESTION)

    # The answer streamed in: it was shown piece by piece, each text extending the one before.
    assert streamed and streamed[-1].strip(), "no text appeared while the answer streamed"
    assert len(set(streamed)) >= 2, f"the answer arrived in one piece, not streamed: {streamed}"
    for shorter, longer in itertools.pairwise(streamed):
        assert longer.startswith(shorter)
    answer = turn.locator(".a")
    assert answer.inner_text().strip()
    assert "streaming" not in (answer.get_attribute("class") or "")

    # The server recorded the served answer under the id the page holds.
    answer_id = turn.get_attribute("data-answer-id")
    assert answer_id
    stored = store.get(answer_id)
    assert stored is not None and stored.question == QUESTION
    assert stored.answer.strip() == answer.inner_text().strip()

    # Clicking a citation shows its passage: the BM25 top hit for this question is paris.txt.
    sources = turn.locator(".sources .cite")
    assert sources.count() == len(stored.passages) >= 2
    first = sources.first
    assert first.inner_text() == "[1] paris.txt"
    first.click()
    assert page.locator("#passage-text").inner_text() == stored.passages[0].text
    assert page.locator("#passage-source").inner_text().startswith("[1] paris.txt")
    # An [n] marker inside the answer text is a button too. The random model writes none, so
    # the page's own renderer is given this answer's text with a marker for passage [2].
    page.evaluate(
        """([text, passages]) => {
            const node = document.createElement("div");
            node.id = "marked";
            renderAnswer(node, text, passages);
            document.getElementById("turns").append(node);
        }""",
        [
            stored.answer + " [2]",
            [{**p.model_dump(), "start": 0, "end": len(p.text)} for p in stored.passages],
        ],
    )
    page.locator("#marked .cite", has_text="[2]").click()
    assert page.locator("#passage-text").inner_text() == stored.passages[1].text
    assert page.locator("#passage-source").inner_text().startswith("[2] strasbourg.txt")
    page.evaluate("document.getElementById('marked').remove()")

    # Thumbs up is recorded against this answer; the buttons lock so it cannot be sent twice.
    turn.locator("button[data-vote=up]").click()
    turn.get_by_text("Thanks — recorded.").wait_for()
    assert turn.locator("button[data-vote=down]").is_disabled()
    with contextlib.closing(sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT answer_id, value FROM votes").fetchall() == [(answer_id, 1)]
    assert store.counts()["votes"] == 1

    shot = artifact_dir(tmp_path) / "chat-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    print(f"chat page screenshot: {shot}")


def test_compare_two_sampled_answers(page: Any, site: tuple[str, FeedbackStore]) -> None:
    _, store = site
    question = "Which river flows past Strasbourg?"
    page.fill("#question", question)
    page.click("#compare")
    pair = page.locator(".pair")
    pair.wait_for()
    boxes = pair.locator(":scope > div")
    assert boxes.count() == 2
    ids = [boxes.nth(i).get_attribute("data-answer-id") for i in range(2)]
    assert all(ids) and ids[0] != ids[1]
    for i, answer_id in enumerate(ids):
        assert answer_id is not None
        stored = store.get(answer_id)
        assert stored is not None and stored.question == question
        assert boxes.nth(i).locator(".a").inner_text().strip() == stored.answer.strip()

    boxes.nth(1).locator(".sources .cite").first.click()  # citations work inside the pair too
    assert page.locator("#passage-text").inner_text().strip()

    boxes.nth(1).get_by_role("button", name="This one is better").click()
    page.locator(".turn .actions", has_text="Thanks — recorded.").wait_for()
    choices = [p for p in store.preference_pairs("question") if p.origin == "choice"]
    assert [(p.chosen_id, p.rejected_id, p.prompt) for p in choices] == [(ids[1], ids[0], question)]
    assert boxes.nth(0).get_by_role("button", name="This one is better").is_disabled()
