"""The loss curve as a PNG and as a self-contained HTML page (the Kubeflow UI shows HTML artifacts)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_loss_curve(rows: Sequence[dict[str, Any]], png: Path, page: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    ax.set(xlabel="optimizer step", ylabel="training loss (response tokens)", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, format="png")
    plt.close(fig)
    encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><h3>{html.escape(title)}</h3>"
        f"<img alt='loss curve' src='data:image/png;base64,{encoded}'></body></html>\n",
        encoding="utf-8",
    )
