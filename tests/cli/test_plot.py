"""``densekit plot``: loss and metric curves plus the per-class IoU chart from a work dir's scalars.json, and the
per-class IoU bar chart on its own."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from densekit.cli.plot import find_scalars, main, plot_work_dir
from densekit.visualization import loss_and_metric_keys, plot_per_class_iou, read_scalars

CLASSES = ["background", "disc", "square", "stripes"]


def write_run(work_dir: Path, stamp: str, iters: int = 40, per_class: bool = True) -> Path:
    """A synthetic mmengine ``<stamp>/vis_data/scalars.json``: train rows every 5 iterations, validation every 10."""
    rows = []
    for it in range(5, iters + 1, 5):
        rows.append({"lr": 1e-3, "data_time": 0.01, "loss": 2.5 * np.exp(-it / 15), "decode.loss_ce": 1.8 * np.exp(
            -it / 15), "aux.loss_ce": 0.7 * np.exp(-it / 15), "time": 0.5, "iter": it, "memory": 100, "step": it})
        if it % 10 == 0:
            row = {"aAcc": 0.9, "mIoU": 1 - np.exp(-it / 10), "mAcc": 0.8, "data_time": 0.01, "time": 0.2, "step": it}
            if per_class:
                row.update({f"IoU.{name}": (i + 1) / 5 for i, name in enumerate(CLASSES)})
            rows.append(row)
    path = work_dir / stamp / "vis_data" / "scalars.json"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_keys_split_into_loss_terms_and_metrics(tmp_path):
    train, val = read_scalars(write_run(tmp_path, "20260101_000000"))
    losses, metrics = loss_and_metric_keys(train, val)
    assert losses == ["loss", "decode.loss_ce", "aux.loss_ce"]
    assert metrics == ["aAcc", "mIoU", "mAcc"]  # no time/data_time, no per-class IoU.<class>


def test_plot_work_dir_writes_curves_and_per_class_chart(tmp_path):
    write_run(tmp_path, "20260101_000000", iters=20, per_class=False)
    newest = write_run(tmp_path, "20260102_000000")
    assert find_scalars(tmp_path) == newest
    written = plot_work_dir(tmp_path)
    curves = cv2.imread(str(written["curves"]))
    assert written["curves"] == tmp_path / "curves.png"
    assert curves.shape == (2 * 300, 3 * 400, 3) and curves.std() > 10  # 6 subplots: 3 losses + 3 metrics
    chart = cv2.imread(str(written["per_class_iou"]))
    assert chart.shape == (round(100 * (1.2 + 0.22 * 4)), 700, 3)
    # the four classes' bars are drawn in four distinct palette colours
    assert len(np.unique(chart.reshape(-1, 3), axis=0)) > 4


def test_command_out_and_run_options(tmp_path, capsys):
    write_run(tmp_path, "20260101_000000", per_class=False)
    out = tmp_path / "pics" / "run.png"
    assert main([str(tmp_path), "--out", str(out), "--run", "20260101_000000", "--title", "t"]) == 0
    assert cv2.imread(str(out)) is not None and "per_class_iou" not in capsys.readouterr().out
    assert not (tmp_path / "pics" / "per_class_iou.png").exists()  # nothing logged per class


def test_clear_errors_without_scalars(tmp_path):
    with pytest.raises(FileNotFoundError, match="no <timestamp>/vis_data/scalars.json"):
        find_scalars(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_scalars(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="'nope' a run folder"):
        find_scalars(tmp_path, run="nope")


def test_per_class_iou_chart_handles_absent_classes(tmp_path):
    out = plot_per_class_iou(["a", "b", "c"], [0.5, float("nan"), 1.0], tmp_path / "iou.png",
                             palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    chart = cv2.imread(str(out))
    assert chart.shape == (round(100 * (1.2 + 0.22 * 3)), 700, 3)
    red = (chart[..., 2] > 200) & (chart[..., 1] < 50) & (chart[..., 0] < 50)
    blue = (chart[..., 0] > 200) & (chart[..., 1] < 50) & (chart[..., 2] < 50)
    assert blue.sum() > 1.5 * red.sum() > 0  # IoU 1.0 draws a bar twice as long as IoU 0.5
    with pytest.raises(ValueError, match="3 class names but 2 IoU values"):
        plot_per_class_iou(["a", "b", "c"], [0.5, 1.0], tmp_path / "x.png")


def test_labelled_overlay_adds_a_legend_of_the_classes_present():
    import numpy as np

    from densekit.visualization import labelled_overlay

    image = np.zeros((40, 300, 3), np.uint8)
    label = np.zeros((40, 300), np.uint8)
    label[:, 150:] = 2
    label[0, 0] = 255  # ignored pixels get no legend entry
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    picture = labelled_overlay(image, label, palette, ["sky", "road", "car"])
    assert picture.shape == (40 + 22, 300, 3)  # two names fit one 22-pixel legend row
    legend = picture[40:]
    assert (legend == [255, 0, 0]).all(-1).any()  # car's swatch, BGR
    assert not (legend == [0, 255, 0]).all(-1).any()  # road is absent from the label map
    assert labelled_overlay(image, np.full((40, 300), 255, np.uint8), palette).shape == (40, 300, 3)


def test_every_plot_axis_is_labelled(tmp_path, monkeypatch):
    import densekit.visualization as vis

    figures = []
    monkeypatch.setattr(vis, "save_figure", lambda fig, out: figures.append(fig) or Path(out))
    write_run(tmp_path, "20260101_000000")
    plot_work_dir(tmp_path)
    axes = [ax for fig in figures for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 + 3 + 1  # three loss terms, three metrics, the per-class chart
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in axes), [(ax.get_xlabel(), ax.get_ylabel()) for ax in axes]
