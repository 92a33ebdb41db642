"""Long hostile-text fuzz (issue 22): ≥ 10,000 generated documents, end to end.

The checks of ``tests/ragkit/test_hostile_text_fuzz.py`` (``tests/hostile_text.py``), at scale:
corpora of files with hostile names and hostile text (rich markup, emoji codes, C0/C1 controls,
bidi overrides and isolates, NUL, CRLF, BOMs, enormous lines, invalid UTF-8 bytes, broken JSONL
lines) go through ``index_paths`` → hybrid search → the CLI printers → ``/v1/search``, with a tiny
random embedder and generator built in-process (no download). Hypothesis runs in rounds of
``--batch`` examples, each round with a fresh seed, until ``--documents`` documents have been
indexed (text files and JSONL records that load; skipped files and broken lines are counted
besides). Prints one JSON summary; exits 1 with hypothesis's falsifying example on a failure.

    .venv/bin/python benchmarks/hostile_text_fuzz.py                     # 10,000 documents
    .venv/bin/python benchmarks/hostile_text_fuzz.py --documents 500     # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
os.environ.setdefault("RAGKIT_EMBED_BACKEND", "torch")  # deterministic, as in the tests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=10_000, help="Documents to index.")
    parser.add_argument("--max-files", type=int, default=16, help="Most files per corpus.")
    parser.add_argument("--max-line", type=int, default=100_000, help="Longest generated line.")
    parser.add_argument("--batch", type=int, default=50, help="Examples per hypothesis round.")
    args = parser.parse_args()

    from conftest import build_tiny_sentence_transformer  # tests/conftest.py
    from hostile_text import HostileRig, corpora, hostile_texts
    from hypothesis import HealthCheck, given, settings
    from tiny_llama import build_tiny_llama

    from ragkit.embedding import Embedder
    from ragkit.generation import Generator

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragkit-hostile-") as scratch:
        root = Path(scratch)
        embedder = Embedder(
            str(build_tiny_sentence_transformer(root / "embedder")), device="cpu", batch_size=64
        ).warm_up()
        llama = build_tiny_llama(
            root / "llama",
            ["Strasbourg is the capital of Alsace."],
            hidden_size=16,
            layers=1,
            heads=2,
            kv_heads=1,
        )
        rig = HostileRig(embedder, Generator(str(llama)), root)

        @settings(
            max_examples=args.batch,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(corpus=corpora(args.max_files, args.max_line), query=hostile_texts(12))
        def round_(corpus: list, query: str) -> None:
            rig.check(corpus, query if query.strip() else "Strasbourg")

        rounds = 0
        try:
            while rig.stats.indexed_documents < args.documents:
                round_()
                rounds += 1
                print(
                    f"round {rounds}: {rig.stats.indexed_documents} documents indexed, "
                    f"{time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
        except Exception as exc:  # hypothesis re-raises with the (shrunk) falsifying example
            print(json.dumps({"result": "FAIL", "error": repr(exc), **vars(rig.stats)}))
            raise
        summary = {
            "result": "pass",
            "indexed_documents": rig.stats.indexed_documents,
            "generated_documents": rig.stats.documents,
            "corpora": rig.stats.corpora,
            "files": rig.stats.files,
            "skipped_files": rig.stats.skipped_files,
            "broken_jsonl_lines": rig.stats.bad_lines,
            "chunks_checked": rig.stats.chunks,
            "rounds": rounds,
            "seconds": round(time.perf_counter() - started, 1),
        }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
