"""`notestream explain`: which notes and words drive an admission's risk.

Two modes, one command:

- ``--admission HADM_ID`` (with ``--store redis://...`` or ``--snapshot FILE``, a saved embedded run):
  the admission's notes and chunks ranked by probability, with their share of the score, read from the
  store without running the model. The store holds no note text, so neither does this output.
- ``--text FILE``: one chunk of a text (cleaned and chunked as the model does; ``--chunk`` picks which)
  explained by self-attention maps and token importances. The pictures hold the text: they are written
  only with ``--out DIR``; without it the top words are printed and nothing is written.

Nothing is logged beyond file names.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from notestream.models.explain.methods import METHODS

console = Console()
progress = Console(stderr=True)  # spinners go to stderr, so --json output stays clean


def register_explain(app: typer.Typer) -> None:
    """Add ``notestream explain`` to the top-level app."""
    app.command("explain")(explain)


def explain(
    model: Path = typer.Option(
        ..., "--model", help="Model folder (its notestream.json gives c and cleaning)."
    ),
    admission: str | None = typer.Option(
        None, "--admission", help="Admission id to rank (MIMIC HADM_ID or a hospital encounter id)."
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Risk store URL, e.g. redis://host:6379/0 (password: NOTESTREAM_REDIS_PASSWORD).",
    ),
    namespace: str | None = typer.Option(
        None,
        "--namespace",
        help="Key namespace in Redis (NOTESTREAM_STORE_NAMESPACE; a demo run's is in its summary).",
    ),
    snapshot: Path | None = typer.Option(None, "--snapshot", help="Saved embedded run (memory store JSON)."),
    text: Path | None = typer.Option(None, "--text", help="UTF-8 text file to explain (one chunk of it)."),
    chunk: int = typer.Option(
        0, "--chunk", help="Which chunk of the text, from 0 (see --admission's top_chunk)."
    ),
    layer: int | None = typer.Option(None, "--layer", help="Attention layer, from 0 (default: the last)."),
    head: int = typer.Option(0, "--head", help="Attention head of --layer, from 0."),
    method: str = typer.Option(
        "integrated_gradients", "--method", help=f"Token importance: {', '.join(METHODS)}."
    ),
    steps: int = typer.Option(32, "--steps", min=1, help="Integrated-gradients steps."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for PNG/HTML/JSON files (nothing is written without it)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    top: int = typer.Option(20, "--top", min=1, help="Rows shown in tables."),
    device: str = typer.Option("cpu", "--device", help="Device for --text, e.g. cpu or cuda:0."),
    config: Path | None = typer.Option(None, "--config", help="Settings TOML file (NOTESTREAM_CONFIG)."),
) -> None:
    """Rank an admission's notes and chunks (--admission), or explain a text (--text)."""
    if (admission is None) == (text is None):
        raise typer.BadParameter("Give exactly one of --admission HADM_ID or --text FILE.")
    if admission is not None:
        _explain_admission(model, admission, store, namespace, snapshot, out, as_json, top, config)
    else:
        assert text is not None
        _explain_text(model, text, chunk, layer, head, method, steps, out, as_json, top, device)


def _explain_admission(
    model: Path,
    hadm_id: str,
    store_url: str | None,
    namespace: str | None,
    snapshot: Path | None,
    out: Path | None,
    as_json: bool,
    top: int,
    config: Path | None,
) -> None:
    import asyncio

    from notestream.core.settings import load_settings
    from notestream.models.calibration import calibrated_risk
    from notestream.models.checkpoint import check_model_folder
    from notestream.models.spec import ModelSpec
    from notestream.stream.evidence import AdmissionEvidence, admission_evidence, write_evidence
    from notestream.stream.ids import parse_id
    from notestream.stream.store import MemoryRiskStore, RiskStore, open_store

    if (store_url is None) == (snapshot is None):
        raise typer.BadParameter("With --admission give exactly one of --store URL or --snapshot FILE.")
    try:
        admission_id = parse_id(hadm_id)
    except ValueError as exc:
        raise typer.BadParameter(f"--admission: {exc}.") from exc

    spec = ModelSpec.read(check_model_folder(model))
    risk_store: RiskStore
    if snapshot is not None:
        # A saved run is read as it was saved: expiry (idle TTL, retention) is not applied.
        risk_store = MemoryRiskStore.restore(snapshot, clock=lambda: float("-inf"))
    else:
        settings = load_settings(config, store=store_url, store_namespace=namespace)
        if settings.store.startswith("memory://"):
            raise typer.BadParameter("A memory:// store lives inside its process; pass --snapshot FILE.")
        risk_store = open_store(settings)

    async def read() -> AdmissionEvidence:
        try:
            return await admission_evidence(risk_store, admission_id, c=spec.c)
        finally:
            await risk_store.close()

    evidence = asyncio.run(read())
    written = write_evidence(evidence, out, top=max(top, 30)) if out is not None else []
    risk = calibrated_risk(spec.calibration, evidence.score)
    if as_json:
        calibrated = {"risk": risk} if risk is not None else {}  # a model without a calibrator: no risk
        typer.echo(json.dumps(evidence.to_json() | calibrated, indent=2))
        return
    console.print(
        f"Admission [bold]{escape(str(evidence.hadm_id))}[/bold]: score [bold]{evidence.score:.4f}[/bold] "
        + (f"(calibrated risk [bold]{risk:.3f}[/bold]) " if risk is not None else "")
        + f"(p_max {evidence.p_max:.4f}, {evidence.n_chunks} chunks in {evidence.n_notes} notes, "
        f"c = {evidence.c:g}, seq {evidence.seq}{', discharged' if evidence.discharged else ''}). "
        "Share = the part of the score each chunk makes: p/c/(1+n/c), plus p_max/(1+n/c) for the top chunk."
    )
    notes = Table(title="Notes, by their best chunk")
    for name in ("rank", "note", "revision", "chunks", "p_max", "best chunk", "share"):
        notes.add_column(name, justify="right" if name != "note" else "left")
    for i, n in enumerate(evidence.notes[:top], 1):
        notes.add_row(
            str(i),
            Text(n.note_id),  # feed strings are never read as markup
            str(n.revision),
            str(n.n_chunks),
            f"{n.p_max:.4f}",
            str(n.top_chunk),
            f"{n.share:.1%}",
        )
    chunks = Table(title="Chunks, by probability")
    for name in ("rank", "note", "chunk", "probability", "share"):
        chunks.add_column(name, justify="right" if name != "note" else "left")
    for i, ch in enumerate(evidence.chunks[:top], 1):
        mark = " (max)" if ch.top else ""
        chunks.add_row(
            str(i), Text(ch.note_id), str(ch.chunk), f"{ch.probability:.4f}{mark}", f"{ch.share:.1%}"
        )
    console.print(notes)
    console.print(chunks)
    for path in written:
        console.print(Text(f"wrote {path}"))


def _explain_text(
    model: Path,
    text: Path,
    chunk: int,
    layer: int | None,
    head: int,
    method: str,
    steps: int,
    out: Path | None,
    as_json: bool,
    top: int,
    device: str,
) -> None:
    from notestream.models.checkpoint import load_model_folder
    from notestream.models.explain.errors import ExplainError
    from notestream.models.explain.report import explain_text, write_explanation

    try:
        content = text.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExplainError(f"Cannot read {text} as UTF-8 text; give a readable text file.") from exc
    # gradients do not pass through int8 layers: a quantized folder is explained on the float weights it holds
    loaded = load_model_folder(model, device=device, attn_implementation="eager", quantize=False)
    with progress.status("Computing attention maps and token importances..."):
        result = explain_text(
            loaded.model, loaded.tokenizer, loaded.spec, content, chunk=chunk, method=method, steps=steps
        )
    written = write_explanation(result, out, layer=layer, head=head) if out is not None else []
    if as_json:
        typer.echo(json.dumps(result.to_json(layer=layer, head=head), indent=2))
        return
    console.print(result.chunk.describe() + f" Probability {result.maps.probability:.4f}.")
    table = Table(title=f"Words that weigh most ({method.replace('_', ' ')})")
    table.add_column("word")
    table.add_column("weight", justify="right")
    for word, weight in result.importance.top(top):
        table.add_row(word, f"{weight:+.3g}")
    console.print(table)
    delta = result.importance.delta
    if delta is not None:
        total = sum(result.importance.weights)
        gap = total - delta
        if abs(delta) > 0.1 * max(abs(gap), 1e-6):
            console.print(
                f"[yellow]The weights add up to {total:.3g} of the logit change {gap:.3g}: the model's "
                f"output jumps along the integration path. Raise --steps (now {steps}) for weights "
                "that add up; the ranking is usually already right.[/yellow]"
            )
    for path in written:
        console.print(f"wrote {path}")
    if out is None:
        console.print("No files written; pass --out DIR for the attention maps and highlighted text.")
