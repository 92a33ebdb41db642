"""The ``ragkit`` typer app and what every command shares: output, errors, options' plumbing.

No logic lives in the CLI beyond presentation; every error the library raises for bad input is a
:class:`~ragkit.errors.RagkitError` and becomes one line on stderr with exit status 1
(:func:`guard`). A command line that does not parse (unknown option, a value outside an option's
choices, a missing argument) is one line too, with click's usage-error status 2.

Importing this package loads no model library (torch, transformers, sentence-transformers,
alignment) nor FastAPI: commands import what they need when they run, so ``--help`` and
``--version`` are instant. Untrusted text (documents, model output, file names, messages quoting
them) is printed with :func:`say` or as :func:`text` cells: never parsed as rich markup or emoji
codes, control and bidi characters shown as symbols (:func:`ragkit.terminal.visible`); JSON goes
through :func:`print_json` and keeps the exact text.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.text import Text
from typer.core import TyperGroup

from ragkit.errors import RagkitError
from ragkit.terminal import terminal_json, visible

try:  # typer >= 0.2x carries its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError  # type: ignore[assignment]

# Plain strings printed on these consoles are never read as markup or emoji codes; styling is
# done with Text objects.
out = Console(markup=False, emoji=False, highlight=False)
err = Console(stderr=True, markup=False, emoji=False, highlight=False)

T = TypeVar("T")


def text(value: str, *, one_line: bool = False) -> Text:
    """Untrusted text as a rich Text (no markup, no emoji codes), terminal-driving characters
    shown as symbols; ``one_line`` also shows newlines (file names, messages)."""
    return Text(visible(value, one_line=one_line))


def say(message: str, *, console: Console = out, one_line: bool = False, end: str = "\n") -> None:
    """Print a line holding untrusted text: exactly what it says, nothing interpreted."""
    console.print(text(message, one_line=one_line), end=end, soft_wrap=True)


def print_json(value: Any) -> None:
    """Print JSON (a JSON string or data): exact text, escaped where a terminal would act on it."""
    out.print(JSONHighlighter()(Text(terminal_json(value))), soft_wrap=True)


def snippet(value: str, limit: int) -> str:
    """Whitespace runs folded to one space, cut at ``limit`` characters (marked with …)."""
    folded = " ".join(value.split())
    return folded[:limit] + ("…" if len(folded) > limit else "")


def _error_line(message: str) -> None:
    err.print(
        Text.assemble(("error:", "bold red"), " ", text(message, one_line=True)), soft_wrap=True
    )


def fail(message: str, *, code: int = 1) -> NoReturn:
    """The CLI's one error exit: ``error: MESSAGE`` on one line of stderr, exit status ``code``."""
    _error_line(message)
    raise typer.Exit(code=code)


def validation_message(exc: ValidationError) -> str:
    """A pydantic validation error (settings built from options) as one line."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"invalid setting {where}: {message}" if where else message


def guard(
    action: Callable[[], T],
    *,
    interrupted: str = "interrupted; everything committed before this point is kept",
) -> T:
    """Run ``action``; the library's errors (and Ctrl-C) become one line and exit status 1."""
    try:
        return action()
    except RagkitError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(validation_message(exc))
    except KeyboardInterrupt:
        fail(interrupted)


class _OneLineUsageErrors(TyperGroup):
    """A usage error anywhere under the ``ragkit`` group (an unknown option, a value outside an
    option's choices) is one ``error:`` line naming the command's ``--help``, not a panel."""

    @staticmethod
    def _report(exc: UsageError) -> NoReturn:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `ragkit align`: the help is the answer
            raise exc
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        # typer checks choices with pydantic, whose message starts "Value error, "
        message = exc.format_message().replace("Value error, ", "")
        fail(message + where, code=exc.exit_code)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            self._report(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            self._report(exc)


app = typer.Typer(
    name="ragkit",
    cls=_OneLineUsageErrors,
    help="Retrieval-augmented question answering: index documents, search them, ask questions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("ragkit")
        except PackageNotFoundError:  # running from a source tree that is not installed
            from ragkit import __version__ as found
        say(f"ragkit {found}")
        raise typer.Exit()


@app.callback()
def _main_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the installed ragkit version and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Retrieval-augmented question answering: index documents, search them, ask questions."""


def _environment() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> None:
    """The ``ragkit`` console script."""
    _environment()
    try:
        app()
    except BrokenPipeError:  # pragma: no cover - `ragkit search ... | head`
        sys.exit(0)


def run(argv: Sequence[str], *, prog_name: str = "ragkit") -> int:
    """Run the CLI on ``argv`` (e.g. ``["align", "sft", "--limit", "10"]``) and return its exit
    status instead of exiting: what the example scripts call."""
    _environment()
    try:
        app(args=list(argv), prog_name=prog_name)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0
