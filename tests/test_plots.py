"""Every kind of figure the book draws, rendered to PNG and checked for what makes a plot legible: each visible axes
says what it shows (a title or axis labels), the image is not blank, and tick labels do not run into each other.
The PNGs are kept in test-artifacts/plots/ (git-ignored) for a person to look at."""
import io
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gpt_mini.attention import plot_attention
from gpt_mini.data import decode, encode
from gpt_mini.model import GPT, GPTConfig, attention_maps
from gpt_mini.memorize import explore_attention
from gpt_mini.sampling import next_token_logits, next_token_table, plot_candidates, plot_cutoffs, plot_knobs, plot_temperature
from gpt_mini.schedule import explore_schedule, schedule_figure
from gpt_mini.run import loss_figure

OUT = Path(__file__).resolve().parents[1]/"test-artifacts"/"plots"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny")).eval()


def _overlapping_tick_labels(fig: Figure) -> list[str]:
    "Pairs of neighbouring tick labels that run into each other, on any axis of any visible axes."
    renderer = _renderer(fig)
    clashes = []
    for ax in fig.axes:
        if not ax.get_visible(): continue
        for axis, coord in ((ax.xaxis, 0), (ax.yaxis, 1)):
            labels = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
            boxes = sorted(((t.get_text(), t.get_window_extent(renderer), t.get_rotation() % 180) for t in labels),
                           key=lambda tb: tb[1].x1 if coord == 0 else tb[1].y1)
            for (a, ba, rot), (b, bb, _) in zip(boxes, boxes[1:]):
                if rot == 0: clash = ba.overlaps(bb) and min(ba.width, bb.width) > 0
                else:  # slanted text: the boxes overlap by design; the lines of text must not touch
                    pitch = (bb.x1 - ba.x1) if coord == 0 else (bb.y1 - ba.y1)  # slanted labels end at their tick
                    line = axis.get_ticklabels()[0].get_fontsize() * fig.dpi / 72
                    clash = pitch * abs(np.sin(np.radians(rot))) < line
                if clash: clashes.append(f"{a!r} / {b!r}")
    return clashes


def _covered_by_legends(fig: Figure) -> list[str]:
    "Text inside an axes (bar labels, annotations) that a legend box hides."
    renderer = _renderer(fig)
    hidden = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None or not ax.get_visible(): continue
        box = legend.get_window_extent(renderer)
        hidden += [t.get_text() for t in ax.texts if t.get_text() and t.get_window_extent(renderer).overlaps(box)]
    return hidden


def _cut_off_texts(fig: Figure) -> list[str]:
    "Titles, labels, drawn tick labels, legend entries and annotations that reach past the edge of the figure."
    renderer = _renderer(fig)
    texts = [fig._suptitle] if fig._suptitle else []
    for ax in fig.axes:
        if not ax.get_visible(): continue
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend(): texts += ax.get_legend().get_texts()
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            texts += [t.label1 for t in axis.get_major_ticks() if lo <= t.get_loc() <= hi]  # only the ones drawn
    edge = fig.bbox.padded(1)
    return [t.get_text() for t in texts if t.get_visible() and t.get_text().strip() and
            not (edge.x0 <= (b := t.get_window_extent(renderer)).x0 and b.x1 <= edge.x1 and edge.y0 <= b.y0 and b.y1 <= edge.y1)]


def _renderer(fig: Figure):
    if not hasattr(fig.canvas, "get_renderer"): FigureCanvasAgg(fig)  # a bare Figure: give it a canvas that draws
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def check_and_save(fig: Figure, name: str):
    OUT.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)  # drawing runs the layout and every artist
    (OUT/f"{name}.png").write_bytes(buf.getvalue())
    for ax in fig.axes:
        if not ax.get_visible() or ax.get_label() == "<colorbar>": continue
        says = [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        assert any(s.strip() for s in says) or fig.get_suptitle(), f"{name}: an axes with no title and no labels"
    assert not _overlapping_tick_labels(fig), f"{name}: tick labels overlap: {_overlapping_tick_labels(fig)[:5]}"
    assert not _covered_by_legends(fig), f"{name}: the legend hides {_covered_by_legends(fig)}"
    assert not _cut_off_texts(fig), f"{name}: text cut off at the edge: {_cut_off_texts(fig)}"
    img = matplotlib.image.imread(io.BytesIO(buf.getvalue()))
    assert img[..., :3].std() > 0.05, f"{name}: the image is (nearly) blank"


def test_attention_heatmap(model):
    prompt = "ROMEO:\nBut soft, what light through yonder window breaks?"
    maps = attention_maps(model, prompt)
    check_and_save(plot_attention(maps[0, 0], [decode([i]) for i in encode(prompt)], title="layer 0, head 0"), "attention")
    fig, _ = explore_attention(model, prompt, layer=1, head=1)
    check_and_save(fig, "attention_explorer")


def test_schedule_figures():
    check_and_save(schedule_figure(3e-4, 500, 5000, 0.0), "schedule_recipe")
    fig, _ = explore_schedule(1e-3, 0, 300, 0.1)
    check_and_save(fig, "schedule_explorer")


def test_loss_figure():
    rng = np.random.default_rng(0)
    steps = list(range(300))
    loss = list(10.8 * np.exp(-np.arange(300) / 40) + 5 + rng.normal(0, 0.2, 300))
    history = {"step": steps, "loss": loss, "eval_step": [0, 100, 200, 300], "eval_train": [10.8, 6.1, 5.5, 5.3],
               "eval_val": [10.8, 6.2, 5.7, 5.5]}
    check_and_save(loss_figure(history, "a run: step 300/300"), "loss")


@pytest.mark.slow
def test_sampling_figures(model):
    logits = next_token_logits(model, "ROMEO:")
    settings = [{}, {"temperature": 0.5}, {"top_k": 5}, {"top_p": 0.9}]
    check_and_save(plot_knobs(logits, settings, suptitle="the knobs"), "sampling_knobs")
    contexts = {"after 'ROMEO:'": logits, "after 'the'": next_token_logits(model, "the")}
    check_and_save(plot_cutoffs(contexts), "sampling_cutoffs")
    check_and_save(plot_temperature(contexts), "sampling_temperature")
    check_and_save(plot_candidates(next_token_table(model, "ROMEO:", top_k=10), "next token"), "sampling_candidates")
