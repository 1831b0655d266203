"""jaxlr.plots: grid layout, heatmap fallback, divergence marks per width, pixel bounds."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from jaxlr import plots, stats


def results(n_lr: int, groups=(("adam", "none"),), widths=(16, 64, 256), seeds=2, epochs=4):
    """A results table whose runs diverge above a width-dependent lr (lr >= 2**(-log2 w / 4))."""
    rows = []
    lrs = 2.0 ** np.linspace(-12, 2, n_lr)
    for opt, rule in groups:
        for w in widths:
            for lr in lrs:
                for s in range(seeds):
                    div = bool(np.log2(lr) >= -np.log2(w) / 4)
                    for e in range(1, epochs + 1):
                        loss = 0.3 + 0.02 * (np.log2(lr) + 6) ** 2 + 0.01 * s + 1.0 / e
                        rows.append(
                            dict(
                                width=w, depth=2, hidden=f"{w}-{w}", optimizer=opt, lr_rule=rule,
                                parametrization="sp", lr=lr, seed=s, epoch=e,
                                train_loss=np.nan if div and e >= 2 else loss,
                                test_loss=np.nan if div and e >= 2 else 1.1 * loss,
                                test_accuracy=0.8, diverged=div,
                                diverged_epoch=2.0 if div else np.nan,
                            )
                        )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would save, kept open for inspection."""
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    yield saved
    for fig in saved:
        plt.close(fig)


def test_lr_labels():
    assert plots.lr_label(2.0**-7) == "2⁻⁷"
    assert plots.lr_label(1.0) == "2⁰"
    assert plots.lr_label(4.0) == "2²"
    assert plots.lr_label(0.0078) == "7.80e-03"
    assert plots.lr_label(0.3) == "0.3"


def test_loss_curves_wrap_into_rows_of_four_with_words_for_diverged(figures):
    df = results(6)  # lrs 2^-12 .. 2^2 in 6 steps; the top two diverge for every width
    plots.plot_loss_curves(df, "unused.png")
    (fig,) = figures
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(shown) == 6
    rows = {round(ax.get_position().y0, 3) for ax in shown}
    cols = {round(ax.get_position().x0, 3) for ax in shown}
    assert (len(rows), len(cols)) == (2, 4)
    last = df[df["epoch"] == 1].groupby("lr")["diverged"].all()
    for ax in shown:
        lr = next(v for v in last.index if ax.get_title().endswith(plots.lr_label(v)))
        said = any("every run diverged" in t.get_text() for t in ax.texts)
        assert said == bool(last[lr]), ax.get_title()


def test_many_lrs_become_a_heatmap_within_pixel_bound(figures, tmp_path, monkeypatch):
    df = results(40, groups=[(o, r) for o in ("adam", "sgd") for r in ("none", "per-layer")])
    plots.plot_loss_curves(df, "unused.png", max_panels=16)
    (fig,) = figures
    meshes = [c for ax in fig.axes for c in ax.collections if hasattr(c, "get_array")]
    assert any(m.get_array() is not None and m.get_array().size == 3 * 40 for m in meshes)
    # every cell where all seeds diverged carries an x, placed at (log2 lr, width row)
    ax = fig.axes[0]
    marks = np.concatenate([c.get_offsets() for c in ax.collections if c.get_offsets().size])
    g = df[(df.optimizer == "adam") & (df.lr_rule == "none") & (df.epoch == 4)]
    expected = {
        (round(np.log2(lr), 6), ["16-16", "64-64", "256-256"].index(h) + 0.5)
        for (h, lr), d in g.groupby(["hidden", "lr"])["diverged"].all().items()
        if d
    }
    assert {(round(x, 6), y) for x, y in marks} >= expected


@pytest.mark.parametrize(
    "n_lr,n_groups",
    [
        pytest.param(200, 6, marks=pytest.mark.slow),
        pytest.param(16, 12, marks=pytest.mark.slow),
        (3, 1),
    ],
)
def test_every_png_stays_within_4000_px(tmp_path, n_lr, n_groups):
    groups = [(o, r) for o in ("adam", "sgd", "adamw") for r in ("a", "b", "c", "d")][:n_groups]
    df = results(n_lr, groups=groups, seeds=1, epochs=2)
    for fn in (plots.plot_loss_curves, plots.plot_lr_sensitivity):
        path = tmp_path / f"{fn.__name__}.png"
        fn(df, path)
        h, w = plt.imread(path).shape[:2]
        assert max(h, w) <= plots.MAX_PIXELS, (fn.__name__, h, w)


def test_lr_sensitivity_marks_divergence_per_width_in_its_strip(figures):
    df = results(15)
    plots.plot_lr_sensitivity(df, "unused.png", select="train_loss")
    (fig,) = figures
    main, strip = fig.axes[0], fig.axes[1]
    hiddens = ["16-16", "64-64", "256-256"]
    got = {(round(x, 6), int(y)) for c in strip.collections for x, y in c.get_offsets()}
    last = df[df["epoch"] == df["epoch"].max()]
    want = {
        (round(np.log2(lr), 6), hiddens.index(h))
        for (h, lr), d in last.groupby(["hidden", "lr"])["diverged"].all().items()
        if d
    }
    assert got == want
    # the widths diverge at different lrs, so the marks are not all at one height
    assert len({y for _, y in got}) == 3
    # the curves are the seed-mean final train loss of the stable lrs, inside the y range
    lo, hi = main.get_ylim()
    for line in main.get_lines():
        y = line.get_ydata()
        if len(y) > 1:
            assert np.all((y >= lo) & (y <= hi))


def test_lr_curves_show_every_seed_and_its_lr_star(figures):
    # seed s's curve is shifted by s octaves' worth of loss: 3 widths x 2 seeds thin lines, and
    # each seed's lr* (stats.seed_lr_stars, the estimator the exponent uses) along the bottom
    df = results(15)
    plots.plot_lr_sensitivity(df, "unused.png", select="train_loss")
    (fig,) = figures
    main = fig.axes[0]
    thin = [line for line in main.get_lines() if line.get_linewidth() == 0.6]
    assert len(thin) == 3 * 2
    last = df[df["epoch"] == df["epoch"].max()]
    want = stats.seed_lr_stars(last, ["hidden"], "train_loss")["log2_lr_star"].dropna()
    ticks = np.concatenate(
        [c.get_offsets()[:, 0] for c in main.collections if c.get_offsets().size]
    )
    for v in want:
        assert np.isclose(ticks, v).any(), v
