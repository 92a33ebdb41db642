"""The ``ragkit`` command line: one module per command group, each command a thin call into the
library.

- :mod:`ragkit.cli.common`: the typer app, output and error helpers, ``main`` and ``run``
- :mod:`ragkit.cli.options`: options several commands take (index, generator, choices)
- :mod:`ragkit.cli.index`: ``index``, ``search``, ``info``, ``delete``
- :mod:`ragkit.cli.answer`: ``ask``, ``chat``
- :mod:`ragkit.cli.evaluate`: ``eval``
- :mod:`ragkit.cli.serve`: ``serve``, ``feedback export``
- :mod:`ragkit.cli.align`: ``align sft``, ``align reward``, ``align ppo``

Importing the package registers every command (below) and loads no model library (see
:mod:`ragkit.cli.common`).
"""

from __future__ import annotations

from ragkit.cli import align, answer, evaluate, index, serve
from ragkit.cli.common import app, main, run

# The command table, in the order of ``ragkit --help``.
app.command("index")(index.index_command)
app.command("search")(index.search_command)
app.command("info")(index.info_command)
app.command("delete")(index.delete_command)
app.command("ask")(answer.ask_command)
app.command("chat")(answer.chat_command)
app.command("eval")(evaluate.eval_command)
app.command("serve")(serve.serve_command)
app.add_typer(serve.feedback_app, name="feedback")
app.add_typer(align.align_app, name="align")

__all__ = ["app", "main", "run"]
