"""Feedback: the SQLite store, votes/choices → preference pairs, export read by `alignment`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from alignment import read_preference_jsonl
from ragkit.feedback import FeedbackError, FeedbackStore, export_preferences, question_key

PASSAGES = [{"n": 1, "chunk_id": "paris:0", "source": "paris.txt", "text": "Paris is the capital."}]


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with FeedbackStore(tmp_path / "fb.db") as s:
        yield s


def test_store_uses_wal(store: FeedbackStore) -> None:
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_record_and_read_back(store: FeedbackStore) -> None:
    store.record_answer("a1", "Capital?", "Paris [1]", PASSAGES, "tiny", created=5.0)
    got = store.get("a1")
    assert got is not None
    assert (got.question, got.answer, got.model, got.created) == (
        "Capital?",
        "Paris [1]",
        "tiny",
        5.0,
    )
    assert got.passages[0].text == "Paris is the capital."
    with pytest.raises(FeedbackError, match="already recorded"):
        store.record_answer("a1", "Capital?", "again", [], "tiny")
    assert store.get("nope") is None


def test_votes_and_choices_are_checked(store: FeedbackStore) -> None:
    store.record_answer("a", "What is X?", "one", [], "m")
    store.record_answer("b", "what is  x?", "two", [], "m")
    store.record_answer("c", "Something else", "three", [], "m")
    with pytest.raises(FeedbackError, match="no recorded answer"):
        store.vote("zzz", 1)
    with pytest.raises(FeedbackError, match="same question"):
        store.choose("a", "c")
    with pytest.raises(FeedbackError, match="two different"):
        store.choose("a", "a")
    store.choose("b", "a")  # the same question up to case and spacing
    store.vote("a", -1)
    assert store.counts() == {"answers": 3, "votes": 1, "choices": 1}
    assert question_key(" What is\tX? ") == "what is x?"


def test_votes_become_pairs_per_question(store: FeedbackStore) -> None:
    store.record_answer("good", "Q?", "right", PASSAGES, "m1")
    store.record_answer("bad", "Q?", "wrong", PASSAGES, "m2")
    store.record_answer("mixed", "Q?", "meh", PASSAGES, "m1")
    store.record_answer("lonely", "Other?", "alone", [], "m1")
    store.vote("good", 1)
    store.vote("good", 1)
    store.vote("bad", -1)
    store.vote("mixed", 1)
    store.vote("mixed", -1)  # net zero: no pair
    store.vote("lonely", 1)  # nothing to compare with
    pairs = store.preference_pairs()
    assert [(p.chosen, p.rejected, p.origin) for p in pairs] == [("right", "wrong", "votes")]
    assert pairs[0].prompt.startswith("Passages:\n[1] Paris is the capital.")
    assert pairs[0].prompt.endswith("Question: Q?")
    assert pairs[0].model == "m1,m2"
    assert store.preference_pairs("question")[0].prompt == "Q?"


def test_export_is_read_by_alignment(store: FeedbackStore, tmp_path: Path) -> None:
    store.record_answer("a", "Q?", "better", PASSAGES, "m")
    store.record_answer("b", "Q?", "worse", PASSAGES, "m")
    store.choose("a", "b")
    store.vote("a", 1)
    store.vote("b", -1)
    out = tmp_path / "pairs.jsonl"
    assert export_preferences(store.path, out) == 2
    loaded = read_preference_jsonl(out, metadata_fields=("origin", "chosen_id", "question"))
    assert loaded.report.kept == 2
    assert loaded.report.dropped == {}
    assert [(p.chosen, p.rejected) for p in loaded.records] == [("better", "worse")] * 2
    assert [p.metadata["origin"] for p in loaded.records] == ["choice", "votes"]
    assert loaded.records[0].metadata["question"] == "Q?"
    with pytest.raises(FeedbackError, match="not found"):
        export_preferences(tmp_path / "missing.db", out)


def test_answers_record_their_prompt_format_and_adapter(store: FeedbackStore) -> None:
    store.record_answer("a", "Q?", "right", PASSAGES, "m", prompt_format="grounded_qa")
    store.record_answer("b", "Q?", "wrong", PASSAGES, "m", prompt_format="grounded_qa", adapter="x")
    got = store.get("b")
    assert got is not None and (got.prompt_format, got.adapter) == ("grounded_qa", "x")
    store.choose("a", "b")
    pair = store.preference_pairs()[0]
    assert (pair.model, pair.prompt_format, pair.adapter) == ("m", "grounded_qa", ",x")
    # a caller-supplied renderer writes the prompt (the feedback loop: the served prompt text)
    rendered = store.preference_pairs(render=lambda q, ps: f"{len(ps)} passage(s) | {q}")
    assert rendered[0].prompt == "1 passage(s) | Q?"


V1_SCHEMA = """
CREATE TABLE answers (id TEXT PRIMARY KEY, question TEXT NOT NULL, question_key TEXT NOT NULL,
    answer TEXT NOT NULL, passages TEXT NOT NULL, model TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, answer_id TEXT NOT NULL,
    value INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE choices (id INTEGER PRIMARY KEY AUTOINCREMENT, chosen_id TEXT NOT NULL,
    rejected_id TEXT NOT NULL, created REAL NOT NULL);
INSERT INTO answers VALUES ('a', 'Q?', 'q?', 'one', '[]', 'm', 1.0);
INSERT INTO answers VALUES ('b', 'Q?', 'q?', 'two', '[]', 'm', 2.0);
INSERT INTO choices (chosen_id, rejected_id, created) VALUES ('a', 'b', 3.0);
PRAGMA user_version=1;
"""


def test_a_version_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    old = sqlite3.connect(db)
    old.executescript(V1_SCHEMA)
    old.close()
    with FeedbackStore(db) as store:
        got = store.get("a")
        assert got is not None and (got.answer, got.prompt_format, got.adapter) == ("one", "", "")
        assert [(p.chosen, p.prompt_format) for p in store.preference_pairs()] == [("one", "")]
        store.record_answer("c", "Q?", "three", [], "m", prompt_format="grounded_qa")
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA user_version").fetchone()[0] == 2
    check.close()


def test_feedback_round_trip_through_the_api(client: Any, tmp_path: Path) -> None:
    question = {"question": "What is the capital of France?", "temperature": 1.5, "max_tokens": 6}
    answers = [client.post("/v1/query", json={**question, "seed": s}).json() for s in range(6)]
    distinct = {a["answer"]: a for a in answers}
    assert len(distinct) >= 2, "sampling should vary the random model's answers"
    first, second = list(distinct.values())[:2]
    chat = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": question["question"]}]},
    ).json()
    ok = [
        {"chosen_id": first["id"], "rejected_id": second["id"]},
        {"answer_id": first["id"], "vote": "up"},
        {"answer_id": chat["id"], "vote": "down"},
    ]
    for body in ok:
        r = client.post("/v1/feedback", json=body)
        assert r.status_code == 200, r.text
    r = client.post("/v1/feedback", json={"answer_id": "unknown", "vote": "up"})
    assert r.status_code == 400 and "no recorded answer" in r.json()["error"]["message"]
    r = client.post("/v1/feedback", json={"answer_id": first["id"], "chosen_id": second["id"]})
    assert r.status_code == 422
    db = client.app.state.ragkit.store.path
    out = tmp_path / "export.jsonl"
    count = export_preferences(db, out)
    pairs = read_preference_jsonl(out).records
    assert count == len(pairs)
    assert (first["answer"], second["answer"]) in {(p.chosen, p.rejected) for p in pairs}
    if first["answer"] != chat["choices"][0]["message"]["content"]:
        assert (first["answer"], chat["choices"][0]["message"]["content"]) in {
            (p.chosen, p.rejected) for p in pairs
        }
    assert all("Passages:\n[1] " in p.prompt for p in pairs)
    # each answer says which model, prompt format and adapter wrote it (checked by the loop)
    stored = client.app.state.ragkit.store.get(first["id"])
    assert stored.prompt_format == "grounded_qa" and stored.adapter == ""


def test_feedback_disabled_is_404(make_client: Any) -> None:
    r = make_client().post("/v1/feedback", json={"answer_id": "x", "vote": "up"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "feedback_disabled"


WRITER = textwrap.dedent(
    """
    import sys
    from ragkit.feedback import FeedbackStore
    store = FeedbackStore(sys.argv[1])
    i = 0
    while True:
        store.record_answer(f"a{i}", "Q?", "x" * 2000, [], "m")
        store.vote(f"a{i}", 1)
        print(i, flush=True)
        i += 1
    """
)


def test_nothing_committed_is_lost_on_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        acknowledged = -1
        deadline = time.monotonic() + 30
        while acknowledged < 50 and time.monotonic() < deadline:
            acknowledged = int(proc.stdout.readline())
    finally:
        proc.kill()  # SIGKILL: no cleanup, no checkpoint
        proc.wait(10)
    assert acknowledged >= 50
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    with FeedbackStore(db) as store:
        counts = store.counts()
        assert counts["answers"] >= acknowledged + 1
        assert counts["votes"] >= acknowledged + 1
        store.record_answer("after", "Q?", "y", [], "m")  # still writable after the crash
