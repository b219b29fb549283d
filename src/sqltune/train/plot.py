"""The loss curve (and, for GRPO, the reward curve beside it) as a PNG and as a self-contained HTML page (the
Kubeflow UI shows HTML artifacts)."""

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

    steps = [r["step"] for r in rows]
    rewarded = "reward" in rows[0]
    fig, axes = plt.subplots(1, 2 if rewarded else 1, figsize=(12 if rewarded else 7, 4), dpi=100, squeeze=False)
    loss = axes[0][0]
    loss.plot(steps, [r["loss"] for r in rows], lw=1.2)
    loss.set(xlabel="optimizer step", ylabel="GRPO loss" if rewarded else "training loss (response tokens)")
    if rewarded:
        reward = axes[0][1]
        reward.plot(steps, [r["reward"] for r in rows], lw=1.2, label="mean reward")
        hits = [(r["step"], r["correct_groups"]) for r in rows if r.get("correct_groups") is not None]
        reward.plot([s for s, _ in hits], [h for _, h in hits], lw=1.2, label="groups with a correct completion")
        reward.set(xlabel="optimizer step", ylabel="execution reward / share")
        reward.legend(loc="best")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
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


def join_pages(pages: Sequence[Path], out: Path) -> None:
    """One HTML page holding the bodies of `pages` (the SFT and GRPO curves of one train step), in order."""
    bodies = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        bodies.append(text[text.index("<body>") + len("<body>") : text.rindex("</body>")])
    out.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>training curves</title></head>"
        f"<body>{''.join(bodies)}</body></html>\n",
        encoding="utf-8",
    )
