"""Extra grounded-QA training questions on Python documentation paragraphs (issue 18).

The first shipped adapter had learnt from one Wikipedia article (Normans) and transferred poorly
to the held-out one, so these add demonstrations from another domain (the second adapter learns
from both). This module keeps them apart from
``squad_small.json`` (whose test article must stay unseen):

- ``paragraphs`` cuts prose paragraphs out of ``../shared/data/python-docs-3.11.tar.gz`` with a
  fixed rule and a fixed seed and writes them, each with an id, to ``benchmarks/.work/`` (the
  shared text is not copied into the repo);
- the questions live in ``benchmarks/data/pydocs_qa.jsonl``: ``{"id", "question", "answers",
  "is_impossible"}`` keyed by paragraph id, written by annotators in SQuAD 2.0 style (answerable
  questions whose answers are verbatim spans, and unanswerable ones that the paragraph seems to
  but does not answer);
- ``validate`` checks every answer is a verbatim span of its paragraph;
- ``sft-data`` turns them into demonstrations the way ``answer_quality.py sft-data`` does: the
  exact prompt ``ragkit ask`` builds (k = 4 hybrid retrieval over all extracted paragraphs) →
  the annotator's first answer present in the passages, else the abstention phrase.

    .venv/bin/python benchmarks/pydocs_qa.py paragraphs
    .venv/bin/python benchmarks/pydocs_qa.py validate
    .venv/bin/python benchmarks/pydocs_qa.py sft-data --out benchmarks/.work/answer_quality/sft-pydocs.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
TARBALL = ROOT.parent / "shared" / "data" / "python-docs-3.11.tar.gz"
WORK = ROOT / "benchmarks" / ".work" / "pydocs_qa"
PARAGRAPHS = WORK / "paragraphs.jsonl"
QUESTIONS = ROOT / "benchmarks" / "data" / "pydocs_qa.jsonl"
SECTIONS = ("tutorial/", "howto/", "faq/", "reference/", "whatsnew/", "library/", "using/")

_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)\s*(?:<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}([^*\n]+?)\*{1,2}(?![\w*])")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")
_REF = re.compile(r"`([^`]+)`_*")


def clean(block: str) -> str:
    """reStructuredText inline markup → the words a reader sees, on one line."""
    text = " ".join(line.strip() for line in block.splitlines())
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = text.replace("::", ":").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip()


def prose_blocks(name: str, source: str) -> list[str]:
    """Unindented blank-line-separated blocks that read as prose (no directives, code, tables)."""
    out = []
    for block in re.split(r"\n\s*\n", source):
        if (
            not block
            or block[0].isspace()
            or block.startswith(("..", "=", "-", "*", "+", "|", "#"))
        ):
            continue
        text = clean(block)
        words = text.split()
        if not 70 <= len(words) <= 180 or text.count(". ") < 2:
            continue
        if sum(ch in "{}[]()=<>_" for ch in text) > len(text) * 0.03:
            continue
        out.append(text)
    return out


def cmd_paragraphs(args: argparse.Namespace) -> int:
    by_file: dict[str, list[str]] = {}
    with tarfile.open(TARBALL) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            rel = member.name.split("/", 1)[-1]
            if not member.isfile() or not rel.startswith(SECTIONS):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            blocks = prose_blocks(rel, handle.read().decode("utf-8", "replace"))
            if blocks:
                by_file[rel] = blocks
    rng = random.Random(args.seed)
    files = sorted(by_file)
    rng.shuffle(files)
    # one paragraph per file and round, files in a seeded order: the ids of earlier rounds never
    # change when more rounds are asked for, so the questions written for them stay valid
    used: dict[str, set[int]] = {rel: set() for rel in files[: args.files]}
    chosen = []
    for round_ in range(args.per_file):
        for rel in files[: args.files]:
            left = [i for i in range(len(by_file[rel])) if i not in used[rel]]
            if not left:
                continue
            # round 0 repeats the draw the first 240 questions were written against
            i = rng.sample(left, 1)[0] if round_ == 0 else rng.choice(left)
            used[rel].add(i)
            text = by_file[rel][i]
            digest = hashlib.sha256(text.encode()).hexdigest()[:8]
            chosen.append(
                {"id": f"{rel.removesuffix('.rst.txt')}#{digest}", "file": rel, "context": text}
            )
    chosen = chosen[: args.limit]
    WORK.mkdir(parents=True, exist_ok=True)
    PARAGRAPHS.write_text("".join(json.dumps(c) + "\n" for c in chosen), encoding="utf-8")
    print(f"{len(chosen)} paragraphs from {len(used)} files -> {PARAGRAPHS}")
    return 0


def read_paragraphs() -> dict[str, str]:
    if not PARAGRAPHS.is_file():
        cmd_paragraphs(argparse.Namespace(seed=0, files=400, per_file=2, limit=360))
    rows = [json.loads(line) for line in PARAGRAPHS.read_text(encoding="utf-8").splitlines()]
    return {r["id"]: r["context"] for r in rows}


def read_questions(path: Path = QUESTIONS) -> list[dict]:
    """The questions file, one JSON object a line; a bad file ends the script in one line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SystemExit(f"error: cannot read questions {path}: {exc.strerror}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise SystemExit(f"error: {path} line {n} is not JSON: {exc}") from None
        if not isinstance(row, dict):
            raise SystemExit(f"error: {path} line {n} is not a JSON object")
        rows.append(row)
    return rows


def problems(paragraphs: dict[str, str], questions: list[dict]) -> list[str]:
    found = []
    for n, q in enumerate(questions, 1):
        context = paragraphs.get(q.get("id", ""))
        if context is None:
            found.append(f"line {n}: unknown paragraph id {q.get('id')!r}")
            continue
        if not q.get("question", "").strip():
            found.append(f"line {n}: empty question")
        if q.get("is_impossible"):
            if q.get("answers"):
                found.append(f"line {n}: an unanswerable question with answers")
        else:
            if not q.get("answers"):
                found.append(f"line {n}: an answerable question without answers")
            for a in q.get("answers", []):
                if not a or a not in context:
                    found.append(f"line {n}: answer {a!r} is not a verbatim span of {q['id']}")
    return found


def cmd_validate(args: argparse.Namespace) -> int:
    paragraphs = read_paragraphs()
    questions = read_questions(Path(args.questions))
    found = problems(paragraphs, questions)
    for line in found:
        print(line, file=sys.stderr)
    answerable = sum(not q.get("is_impossible") for q in questions)
    print(f"{len(questions)} questions ({answerable} answerable), {len(found)} problems")
    return 1 if found else 0


def ensure_index() -> Path:
    return index_paragraphs(read_paragraphs(), WORK)


def index_paragraphs(paragraphs: dict[str, str], work: Path) -> Path:
    """Each paragraph as its own text file under ``work``, indexed with ragkit's defaults
    (reused while present): the retrieval the demonstrations' prompts are built with."""
    from ragkit import Index, index_paths

    index_dir = work / "index"
    if (index_dir / "manifest.json").is_file():
        return index_dir
    folder = work / "paragraph-files"
    folder.mkdir(parents=True, exist_ok=True)
    for pid, context in paragraphs.items():
        (folder / (re.sub(r"[^\w.-]+", "_", pid) + ".txt")).write_text(context, encoding="utf-8")
    with Index.open_or_create(index_dir) as index:
        index_paths(index, [folder])
    return index_dir


def cmd_sft_data(args: argparse.Namespace) -> int:
    from answer_quality import write_demonstrations

    paragraphs = read_paragraphs()
    questions = read_questions(Path(args.questions))
    bad = problems(paragraphs, questions)
    if bad:
        print(f"error: {len(bad)} invalid questions, first: {bad[0]}", file=sys.stderr)
        return 1
    pairs = [  # the annotator's answers in their order: the first is the preferred one
        (q["question"], None if q.get("is_impossible") else list(q["answers"])) for q in questions
    ]
    count, spans = write_demonstrations(
        pairs, ensure_index(), Path(args.out), args.k, args.template
    )
    print(f"{count} demonstrations ({spans} with a span) -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pa = sub.add_parser("paragraphs")
    pa.add_argument("--seed", type=int, default=0)
    pa.add_argument("--files", type=int, default=400)
    pa.add_argument("--per-file", type=int, default=2, help="rounds of one paragraph per file")
    pa.add_argument("--limit", type=int, default=360, help="at most this many paragraphs")
    va = sub.add_parser("validate")
    va.add_argument("--questions", default=str(QUESTIONS))
    sd = sub.add_parser("sft-data")
    sd.add_argument("--out", required=True)
    sd.add_argument("--questions", default=str(QUESTIONS))
    sd.add_argument("--k", type=int, default=4)
    sd.add_argument("--template", default="grounded_qa_completion")
    args = parser.parse_args(argv)
    return {"paragraphs": cmd_paragraphs, "validate": cmd_validate, "sft-data": cmd_sft_data}[
        args.command
    ](args)


if __name__ == "__main__":
    raise SystemExit(main())
