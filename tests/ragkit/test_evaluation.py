from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragkit import ChunkingSettings, Index
from ragkit.cli import app
from ragkit.embedding import Embedder
from ragkit.errors import RagkitError
from ragkit.evaluation import (
    abstained,
    exact_match,
    gold_chunks_for,
    groundedness,
    hit_at_k,
    load_dataset,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    token_f1,
)
from ragkit.schema import Document


def test_retrieval_metrics_hand_computed() -> None:
    retrieved = ["a", "x", "b", "y"]
    relevant = {"a", "b", "c"}
    assert recall_at_k(retrieved, relevant, 1) == pytest.approx(1 / 3)
    assert recall_at_k(retrieved, relevant, 3) == pytest.approx(2 / 3)
    assert hit_at_k(retrieved, relevant, 1) == 1.0 and hit_at_k(["x"], relevant, 1) == 0.0
    assert mrr_at_k(["x", "y", "b"], relevant, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(["x", "y", "b"], relevant, 2) == 0.0
    # dcg = 1/log2(2) + 1/log2(4) = 1.5; ideal (3 relevant) = 1 + 1/log2(3) + 1/2
    assert ndcg_at_k(retrieved, relevant, 10) == pytest.approx(
        1.5 / (1 + 1 / 1.584962500721156 + 0.5)
    )
    # empty results and no relevant items
    assert (
        recall_at_k([], relevant, 5) == 0.0
        and mrr_at_k([], relevant) == 0.0
        and ndcg_at_k([], relevant) == 0.0
    )
    assert recall_at_k(retrieved, set(), 5) == 0.0 and ndcg_at_k(retrieved, set()) == 0.0
    # ties/duplicates: a repeated relevant id counts once
    assert ndcg_at_k(["a", "a"], {"a"}, 10) == pytest.approx(1.0)


def test_squad_normalisation_and_answer_metrics() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an Apple, a day") == "apple day"
    assert exact_match("the Rhine.", ["Rhine", "river Rhine"]) == 1.0
    assert exact_match("Rhine river", ["Rhine"]) == 0.0
    assert token_f1("Rhine river", ["the Rhine"]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert token_f1("", [""]) == 1.0 and token_f1("x", []) == 0.0
    assert groundedness("Paris is big", ["Paris is the capital"]) == pytest.approx(2 / 3)
    assert abstained("The context does not say.") and not abstained("Paris.")


def test_squad_reader_and_gold_chunk_matching(
    tmp_path: Path, shared_data: Path, tiny_embedder: Embedder
) -> None:
    dataset = load_dataset(shared_data / "squad_small.json")
    assert dataset.format == "squad" and len(dataset.corpus) == 87 and len(dataset.questions) == 626
    answerable = [q for q in dataset.questions if not q.is_impossible]
    assert answerable and all(q.gold_ids and q.answers and q.context for q in answerable)
    # against another index, gold = the chunks holding the answer span with its context
    question = answerable[0]
    with Index.create(
        tmp_path / "idx",
        tiny_embedder,
        ChunkingSettings(unit="chars", chunk_size=300, chunk_overlap=50),
    ) as index:
        index.add_documents([Document(id="p", text=question.context or "", source="p")])
        index.commit()
        gold = gold_chunks_for(index, question)
        assert gold
        for chunk_id in gold:
            chunk = index.chunk(chunk_id)
            assert chunk is not None and question.answers[0] in chunk.text


def test_evaluate_end_to_end_and_json_schema(
    tmp_path: Path, shared_data: Path, tiny_model_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(shared_data / "squad_small.json"),
            "--embedder",
            str(tiny_model_path),
            "--limit",
            "30",
            "--json",
            "--failures",
            str(tmp_path / "f.jsonl"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {
        "schema_version",
        "dataset",
        "retriever",
        "k",
        "questions",
        "answerable",
        "unanswerable",
        "retrieval",
        "generation",
        "seconds",
    }
    assert report["questions"] == 30 and report["answerable"] + report["unanswerable"] == 30
    assert set(report["retrieval"]) >= {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
    assert all(
        0.0 <= v <= 1.0 for name, v in report["retrieval"].items() if name != "questions_scored"
    )
    failures = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert all(f["first_relevant_rank"] is None for f in failures)


def test_bad_datasets(tmp_path: Path) -> None:
    with pytest.raises(RagkitError, match="dataset not found"):
        load_dataset(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"version": 1}')
    with pytest.raises(RagkitError, match="not in SQuAD format"):
        load_dataset(tmp_path / "bad.json")
    (tmp_path / "q.jsonl").write_text('{"answers": ["x"]}\n')
    with pytest.raises(RagkitError, match="no 'question'"):
        load_dataset(tmp_path / "q.jsonl")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "bad.json")])
    assert result.exit_code == 1 and "not in SQuAD format" in result.stderr


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"data": ["x"]}, "data[0] is not an object"),
        ({"data": [{"paragraphs": "x"}]}, "data[0].paragraphs is not a list"),
        ({"data": [{"paragraphs": [{"qas": []}]}]}, "data[0].paragraphs[0] has no 'context'"),
        ({"data": [{"paragraphs": [{"context": 5}]}]}, "has no 'context' string"),
        ({"data": [{"paragraphs": [{"context": "c", "qas": [5]}]}]}, ".qas[0] is not an object"),
        (
            {"data": [{"paragraphs": [{"context": "c", "qas": [{"question": 1}]}]}]},
            ".qas[0] has no 'question' string",
        ),
        (
            {
                "data": [
                    {"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": "z"}]}]}
                ]
            },
            "'answers' that are not a list",
        ),
        (
            {
                "data": [
                    {
                        "paragraphs": [
                            {
                                "context": "c",
                                "qas": [
                                    {
                                        "question": "q",
                                        "answers": [{"text": "c", "answer_start": "x"}],
                                    }
                                ],
                            }
                        ]
                    }
                ]
            },
            "'answer_start' that is not an integer",
        ),
    ],
)
def test_malformed_squad_is_one_line_naming_where(
    tmp_path: Path, data: object, message: str
) -> None:
    """Each of these was a KeyError/TypeError/AttributeError traceback (new-user probe)."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RagkitError, match="not in SQuAD format") as caught:
        load_dataset(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_malformed_beir_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)

    def write(corpus: str, queries: str, qrels: bytes) -> str:
        (folder / "corpus.jsonl").write_text(corpus)
        (folder / "queries.jsonl").write_text(queries)
        (folder / "qrels" / "test.tsv").write_bytes(qrels)
        with pytest.raises(RagkitError) as caught:
            load_dataset(folder)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    good_corpus = '{"_id": "d1", "text": "t"}\n'
    good_queries = '{"_id": "q1", "text": "q?"}\n'
    assert "corpus.jsonl:1: no '_id'" in write('{"text": "t"}\n', good_queries, b"q1\td1\t1\n")
    assert "queries.jsonl:1: no 'text'" in write(good_corpus, '{"_id": "q1"}\n', b"q1\td1\t1\n")
    assert "the score 'abc' is not a number" in write(good_corpus, good_queries, b"q1\td1\tabc\n")
    assert "is not UTF-8 text" in write(good_corpus, good_queries, b"\xff\xfe\x00\x01")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(RagkitError, match="is not UTF-8 text"):
        load_dataset(binary)


def test_beir_folder(tmp_path: Path, tiny_model_path: Path) -> None:
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"_id": "c1", "title": "Rhine", "text": "The Rhine river."},
                {"_id": "c2", "title": "War", "text": "The war on terror."},
            ]
        )
    )
    (folder / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "Which river?"})
        + "\n"
        + json.dumps({"_id": "q2", "text": "unjudged"})
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tc1\t1\n")
    dataset = load_dataset(folder)
    assert (
        dataset.format == "beir"
        and [q.id for q in dataset.questions] == ["q1"]
        and dataset.questions[0].gold_ids == ["c1"]
    )
    result = CliRunner().invoke(
        app,
        ["eval", str(folder), "--embedder", str(tiny_model_path), "--retriever", "bm25", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["retrieval"]["hit@1"] == 1.0
