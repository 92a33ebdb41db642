"""A mixed-load client for the soak tests: searches, questions, votes and choices.

Importable (the thread tests call :func:`run_clients`) and runnable as a script, so separate
processes can load one server::

    python tests/soak/soak_load.py BASE_URL SECONDS TAG SEED THREADS [SEARCH_ONLY]

prints one JSON object: per-route status counts, connection errors, and the answer ids, votes and
choices the server acknowledged (200), which the tests then look for in the feedback store.
Only the standard library and httpx: a client process starts in a fraction of a second.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from typing import Any

QUESTIONS = [
    "What is the capital of Alsace?",
    "Which river flows past Strasbourg?",
    "What does culture include?",
    "What is the capital of France?",
]
SEARCHES = ["capital of france", "river", "culture music art", "strasbourg cathedral", "war"]


def run_client(
    base: str, seconds: float, tag: str, seed: int, search_only: bool = False
) -> dict[str, Any]:
    """One client: requests back to back for ``seconds``, a fresh connection every 25."""
    import httpx

    rng = random.Random(seed)
    statuses: dict[str, Counter[str]] = {}
    errors: list[str] = []
    by_question: dict[str, list[str]] = {}
    answers: list[str] = []
    votes: list[tuple[str, int]] = []
    choices: list[tuple[str, str]] = []
    deadline = time.monotonic() + seconds
    http: httpx.Client | None = None
    sent = 0
    try:
        while time.monotonic() < deadline:
            if http is None or sent % 25 == 0:
                if http is not None:
                    http.close()
                http = httpx.Client(base_url=base, timeout=60)
            sent += 1
            roll = 1.0 if search_only else rng.random()
            route, body = "/v1/search", {"query": rng.choice(SEARCHES), "k": 4}
            if roll < 0.15:
                question = rng.choice(QUESTIONS)
                route, body = "/v1/query", {"question": question, "max_tokens": 3}
            elif roll < 0.30 and answers:
                answer_id, value = rng.choice(answers), rng.choice((1, -1))
                route = "/v1/feedback"
                body = {"answer_id": answer_id, "vote": "up" if value == 1 else "down"}
            elif roll < 0.34 and any(len(ids) >= 2 for ids in by_question.values()):
                ids = rng.choice([ids for ids in by_question.values() if len(ids) >= 2])
                chosen, rejected = rng.sample(ids, 2)
                route, body = "/v1/feedback", {"chosen_id": chosen, "rejected_id": rejected}
            try:
                response = http.post(route, json=body)
            except httpx.TransportError as exc:
                errors.append(f"{route}: {type(exc).__name__}: {exc}")
                http.close()
                http = None
                continue
            statuses.setdefault(route, Counter())[str(response.status_code)] += 1
            if response.status_code != 200:
                continue
            if route == "/v1/query":
                answer_id = response.json()["id"]
                answers.append(answer_id)
                by_question.setdefault(body["question"], []).append(answer_id)
            elif route == "/v1/feedback" and "vote" in body:
                votes.append((body["answer_id"], 1 if body["vote"] == "up" else -1))
            elif route == "/v1/feedback":
                choices.append((body["chosen_id"], body["rejected_id"]))
    finally:
        if http is not None:
            http.close()
    return {
        "tag": tag,
        "statuses": {route: dict(counts) for route, counts in statuses.items()},
        "errors": errors,
        "answers": answers,
        "votes": votes,
        "choices": choices,
    }


def run_clients(
    base: str, seconds: float, tag: str, seed: int, threads: int, search_only: bool = False
) -> dict[str, Any]:
    """``threads`` clients at once; their results merged."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        try:
            got = run_client(base, seconds, f"{tag}-{n}", seed * 1000 + n, search_only)
        except BaseException as exc:  # an assertion in the test names it, not a lost thread
            got = {"errors": [f"client crashed: {exc!r}"]}
        with lock:
            results.append(got)

    workers = [threading.Thread(target=one, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return merge(results)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "statuses": {},
        "errors": [],
        "answers": [],
        "votes": [],
        "choices": [],
    }
    for result in results:
        for route, counts in result.get("statuses", {}).items():
            total = merged["statuses"].setdefault(route, {})
            for status, n in counts.items():
                total[status] = total.get(status, 0) + n
        for key in ("errors", "answers", "votes", "choices"):
            merged[key].extend(result.get(key, []))
    return merged


if __name__ == "__main__":
    base_url, secs, name, first_seed, count = sys.argv[1:6]
    only_search = len(sys.argv) > 6 and sys.argv[6] == "search"
    print(
        json.dumps(
            run_clients(base_url, float(secs), name, int(first_seed), int(count), only_search)
        )
    )
