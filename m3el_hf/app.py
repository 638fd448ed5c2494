"""``m3el-hf app``: link mentions in the browser, a Gradio demo of a checkpoint and its entity indexes.

The page takes a sentence, the mention in it and optionally the mention's picture, ranks the entities of
the chosen knowledge base (an index written by ``m3el-hf index build``) and shows them as a table (rank,
name, description, Qid, score) and as a gallery of their images; given an ``m3el-hf evaluate`` results
file, it also shows the model's accuracy per task. Gradio is an optional dependency: ``m3el-hf[app]``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .locations import check_checkpoint

if TYPE_CHECKING:
    import gradio
    import PIL.Image

    from .linking import EntityIndex, EntityLinker

__all__ = ["HEADERS", "MAX_TOP_K", "AppConfig", "build_app", "index_labels", "main", "run_app"]

HEADERS = ("rank", "name", "description", "Qid", "score")
MAX_TOP_K = 100
"""The most entities one request shows (fewer when the largest knowledge base is smaller)."""
_INSTALL = "pip install 'm3el-hf[app]'"
_NO_GRADIO = f"The demo app needs gradio, which is not installed: {_INSTALL}"

IndexFolders = str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]]


@dataclass(frozen=True)
class AppConfig:
    """Options of ``m3el-hf app``.

    >>> AppConfig(model="runs/clipnd/final", index=(Path("index-movies"),)).port
    7860
    """

    model: str = field(
        metadata={"help": "Checkpoint folder or Hub id, CLIP or CLIP_ND: the one the indexes were built with."}
    )
    index: tuple[Path, ...] = field(
        metadata={
            "help": "Entity index folder(s) written by m3el-hf index build; with several, a menu picks the "
            "knowledge base, each labelled by its folder name."
        }
    )
    results: Path | None = field(
        default=None, metadata={"help": "An m3el-hf evaluate results file: the page shows the accuracy per task."}
    )
    port: int = field(default=7860, metadata={"help": "Port to serve the page on."})
    host: str | None = field(
        default=None,
        metadata={"help": "Address to listen on (default: 127.0.0.1, or GRADIO_SERVER_NAME); 0.0.0.0 for a network."},
    )
    share: bool = field(default=False, metadata={"help": "Also serve the page at a temporary public gradio.live URL."})
    allow_other_checkpoint: bool = field(
        default=False,
        metadata={
            "help": "Serve an --index that another checkpoint built (other weights, templates or fusion): its "
            "scores do not compare with --model's, so it is refused at start-up without this."
        },
    )

    def __post_init__(self) -> None:
        if importlib.util.find_spec("gradio") is None:
            raise ValueError(_NO_GRADIO)
        if not self.index:
            raise ValueError("Pass at least one entity index folder with --index.")
        if self.results is not None and importlib.util.find_spec("matplotlib") is None:
            raise ValueError(f"--results draws a plot with matplotlib: {_INSTALL}, or leave out --results.")
        if not 0 < self.port < 65536:
            raise ValueError(f"--port must be between 1 and 65535, got {self.port}.")


def run_app(config: AppConfig) -> None:
    """Build the page and serve it until interrupted (Ctrl+C)."""
    _check_port(config.host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1", config.port)
    blocks = build_app(config.model, config.index, config.results, config.allow_other_checkpoint)
    blocks.launch(server_name=config.host, server_port=config.port, share=config.share)


def _check_port(host: str, port: int) -> None:
    """Refuse a port another server holds before the model loads (gradio would only find out after)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            message = f"Cannot serve on {host}:{port} ({error.strerror}); pass another --port or --host."
            raise ValueError(message) from None


def build_app(
    model: str | os.PathLike[str],
    index: IndexFolders,
    results: str | os.PathLike[str] | None = None,
    allow_other_checkpoint: bool = False,
) -> gradio.Blocks:
    """The demo page: `model` (a checkpoint folder or Hub id) links mentions against the entities of `index`.

    Args:
        model (`str` or `os.PathLike`): The CLIP or CLIP_ND checkpoint the indexes were built with.
        index: One index folder, several (a menu labelled by folder names), or a mapping label → folder.
        results (`str` or `os.PathLike`, *optional*): An ``m3el-hf evaluate`` results file; the page then shows
            the accuracy per task and topic of the model's records (of every model, if none is `model`).
        allow_other_checkpoint (`bool`, *optional*, defaults to `False`): Serve indexes that another checkpoint
            built; without it they are refused here, before the page is built.

    Returns:
        `gradio.Blocks`: The page, not yet launched.
    """
    gr = _gradio()
    from .linking import EntityIndex, EntityLinker

    check_checkpoint(model)
    folders = index_labels(index)
    indexes = {label: EntityIndex.load(folder) for label, folder in folders.items()}
    plot = None if results is None else _accuracy_plot(results, model)
    linker = EntityLinker.from_pretrained(model)
    for entities in indexes.values():
        entities.check_encoder(linker.identity, allow_other_checkpoint)
    most = max(1, min(MAX_TOP_K, max(len(entities) for entities in indexes.values())))
    with gr.Blocks(title="M³EL entity linking", analytics_enabled=False) as blocks:
        gr.Markdown(_header(model, indexes))
        with gr.Row():
            with gr.Column():
                sentence = gr.Textbox(label="Sentence", placeholder="Paris is the capital of France.", lines=2)
                mention = gr.Textbox(label="Mention", placeholder="Paris", elem_id="mention")
                # A file, not gradio's Image: that one opens the upload with PIL first, and a file PIL refuses
                # becomes an "Error" without a reason. `_link` reads it by the package's image rule and says why.
                image = gr.File(label="Mention image (optional)", type="filepath", height=120, elem_id="mention-image")
                kb = gr.Dropdown(
                    list(indexes), value=next(iter(indexes)), label="Knowledge base", visible=len(indexes) > 1
                )
                top_k = gr.Slider(1, most, value=min(5, most), step=1, label="Top k", elem_id="top-k")
                button = gr.Button("Link", variant="primary", elem_id="link")
            with gr.Column():
                table = gr.Dataframe(headers=list(HEADERS), label="Ranked entities", elem_id="results")
                gallery = gr.Gallery(label="Their images", columns=5, height="auto", elem_id="gallery")
        if plot is not None:
            gr.Image(plot, label="Accuracy per task (candidate lists)", elem_id="accuracy")
        inputs, outputs = [sentence, mention, image, kb, top_k], [table, gallery]
        link = partial(_link, linker, indexes, allow_other_checkpoint=allow_other_checkpoint)
        button.click(link, inputs, outputs)
        mention.submit(link, inputs, outputs)
    return blocks


def index_labels(index: IndexFolders) -> dict[str, Path]:
    """Each index folder by its menu label: its folder name, or its path where two folders share a name."""
    if isinstance(index, Mapping):
        folders = {str(label): Path(folder) for label, folder in index.items()}
    else:
        paths = [Path(index)] if isinstance(index, str | os.PathLike) else [Path(p) for p in index]
        names = [Path(os.path.abspath(path)).name for path in paths]  # "." by its name; links as given
        folders = {name if names.count(name) == 1 else str(path): path for name, path in zip(names, paths, strict=True)}
    if not folders:
        raise ValueError("Pass at least one entity index folder.")
    return folders


def _link(
    linker: EntityLinker,
    indexes: Mapping[str, EntityIndex],
    sentence: str | None,
    mention: str | None,
    image: str | None,
    kb: str,
    top_k: float,
    allow_other_checkpoint: bool = False,
) -> tuple[list[list[Any]], list[tuple[PIL.Image.Image, str]]]:
    """One click of Link: the table's rows and the gallery's captioned images."""
    from .images import ImageInputError, load_user_image

    if not (mention or "").strip():
        raise _gradio().Error("Type the mention: the words of the sentence that name the entity.")
    try:
        picture = None if image is None else load_user_image(image, linker.max_pixels, Path(image).name)
    except ImageInputError as error:
        raise _gradio().Error(str(error)) from None
    found = linker.link(
        mention=mention.strip(),
        sentence=(sentence or "").strip() or None,
        image=picture,
        index=indexes[kb],
        top_k=int(top_k),
        allow_other_checkpoint=allow_other_checkpoint,
    )
    rows = [[e.rank, e.name, e.description, e.qid, round(e.score, 4)] for e in found]
    return rows, [(e.image, f"{e.rank}. {e.name} ({e.qid})") for e in found if e.image is not None]


def _header(model: str | os.PathLike[str], indexes: Mapping[str, EntityIndex]) -> str:
    lines = [
        f"- **{label}**: {len(entities)} entities, entity modality {entities.modality}"
        for label, entities in indexes.items()
    ]
    return (
        f"# M³EL entity linking\n\nType a sentence and the mention in it (add its picture to link by text and "
        f"image), then **Link**: the entities closest to the mention, by `{Path(model).name or model}`.\n\n"
        + "\n".join(lines)
    )


def _accuracy_plot(results: str | os.PathLike[str], model: str | os.PathLike[str]) -> PIL.Image.Image:
    """The accuracy plot of `model`'s records in `results` (all records where none is the model's)."""
    import PIL.Image

    from .evaluation.plots import plot_accuracy
    from .evaluation.results import read_results

    records = read_results(results)
    served = [r for r in records if _same_checkpoint(r["checkpoint"], model)]
    with tempfile.TemporaryDirectory() as folder:
        path = plot_accuracy(served or records, Path(folder) / "accuracy.png", protocol="candidates")
        with PIL.Image.open(path) as png:
            return png.copy()


def _same_checkpoint(recorded: str, model: str | os.PathLike[str]) -> bool:
    if recorded == os.fspath(model):
        return True
    return bool(recorded) and Path(recorded).exists() and Path(recorded).resolve() == Path(model).resolve()


def _gradio() -> Any:
    try:
        import gradio
    except ImportError:
        raise ImportError(_NO_GRADIO) from None
    return gradio


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``m3el-hf app`` with `argv` (default: the process arguments); return the exit status."""
    from .cli import main as cli_main

    return cli_main(["app", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
