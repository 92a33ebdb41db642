"""Index a folder and answer a question with citations, on the embedded default models.

Run: .venv/bin/python examples/rag_qa.py [QUESTION]
"""

import sys
from pathlib import Path

from ragkit import Index, index_paths
from ragkit.rag import RAGPipeline

here = Path(__file__).parent
question = sys.argv[1] if len(sys.argv) > 1 else "What is the capital of Alsace?"

with Index.open_or_create(here.parent / ".ragkit-demo-index") as index:
    index_paths(index, [here / "data"])  # unchanged files are not re-embedded

rag = RAGPipeline.from_index(here.parent / ".ragkit-demo-index", k=4)
answer = rag.ask(question)
print(answer.answer)
for citation in answer.citations:
    print(f"[{citation.n}] {citation.source} [{citation.start}:{citation.end}]")
