"""Training on a folder of one's own: the layout found (not assumed), the classes read, every head following
them, class counts checked against the heads, and a run length override moving the schedule with it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers.own_data import make_folder
from helpers.paths import SHARED_DATA

from densekit.datasets.bad_samples import BadSampleError
from densekit.engine.config import load_config
from densekit.engine.config_check import ConfigError
from densekit.engine.data_check import check_datasets, check_samples
from densekit.engine.own_data import demo_data_folder, find_image_suffix, read_classes, set_num_classes, use_data_folder

CLASSES = ["road", "building", "tree"]  # make_folder's


def test_the_image_suffix_is_found_and_mixed_or_missing_images_are_named(tmp_path):
    folder = make_folder(tmp_path / "d", suffix=".tif")
    assert find_image_suffix(str(folder / "images" / "train")) == ".tif"
    cv2.imwrite(str(folder / "images" / "train" / "extra.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"images/train mixes image suffixes \(2 \.tif, 1 \.jpg\)"):
        find_image_suffix(str(folder / "images" / "train"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"empty holds no image \(1 \.txt\)"):
        find_image_suffix(str(tmp_path / "empty"))


def test_classes_come_from_classes_txt_or_the_argument(tmp_path):
    folder = make_folder(tmp_path / "d")
    assert read_classes(str(folder)) == CLASSES
    assert read_classes(str(folder), "a, b") == ["a", "b"]
    with pytest.raises(ConfigError, match="more than once"):
        read_classes(str(folder), "a,a")
    with pytest.raises(FileNotFoundError, match="classes.txt does not exist.*--classes"):
        read_classes(str(tmp_path))


def test_every_head_follows_the_folder_classes_and_the_datasets_read_it(tmp_path):
    folder = make_folder(tmp_path / "d", suffix=".jpg")
    (folder / "palette.txt").write_text("1 2 3\n4,5,6\n7 8 9\n")
    cfg = load_config("upernet_swin_t_demo")
    notes = use_data_folder(cfg, str(folder))
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 3
    assert "model.decode_head.num_classes, model.auxiliary_head.num_classes" in notes[1]
    for loader, split in (("train_dataloader", "train"), ("val_dataloader", "val"), ("test_dataloader", "val")):
        ds = cfg[loader].dataset
        assert (ds.type, ds.img_dir, ds.img_suffix, ds.classes) == ("SegDataset", f"images/{split}", ".jpg", CLASSES)
        assert ds.palette == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
        assert ds.pipeline  # the config's pipeline is kept
    check_datasets(cfg)  # the heads agree with the classes now
    assert check_samples(cfg) == 4


def test_list_heads_follow_too():
    model = dict(decode_head=dict(num_classes=150), auxiliary_head=[dict(num_classes=150), dict(num_classes=150)],
                 backbone=dict(num_classes=1000))
    assert set_num_classes(model, 4) == ["model.decode_head.num_classes", "model.auxiliary_head.0.num_classes",
                                         "model.auxiliary_head.1.num_classes"]
    assert model["backbone"]["num_classes"] == 1000  # not a head


@pytest.mark.parametrize("names, heads", [(7, 6), (6, 4)])
def test_heads_that_disagree_with_the_dataset_classes_are_refused(tmp_path, names, heads):
    classes = [f"c{i}" for i in range(names)]
    folder = make_folder(tmp_path / "d", classes=classes)
    cfg = load_config("upernet_swin_t_demo", {"model.decode_head.num_classes": heads,
                                              "model.auxiliary_head.num_classes": heads})
    for loader in ("train_dataloader", "val_dataloader"):
        cfg[loader].dataset = dict(type="SegDataset", data_root=str(folder), img_dir="images/train",
                                   ann_dir="masks/train", img_suffix=".png", classes=classes)
    with pytest.raises(ConfigError, match=rf"names {names} classes .* but model.decode_head.num_classes={heads}, "
                                          rf"model.auxiliary_head.num_classes={heads}"):
        check_datasets(cfg)


def test_a_mask_value_outside_the_classes_is_found_before_training(tmp_path):
    folder = make_folder(tmp_path / "d")
    cv2.imwrite(str(folder / "masks" / "val" / "1.png"), np.full((32, 32), 200, np.uint8))
    cfg = load_config("upernet_swin_t_demo")
    use_data_folder(cfg, str(folder))
    with pytest.raises(BadSampleError, match=r"SegDataset\[1\] .*val/1.png.*200"):
        check_samples(cfg)


def test_the_demo_config_pointed_at_an_own_folder_trains_on_it(tmp_path):
    folder = make_folder(tmp_path / "d")
    cfg = load_config("upernet_swin_t_demo", {"train_dataloader.dataset.data_root": str(folder)})
    assert demo_data_folder(cfg) == str(folder)
    notes = []
    cfg = load_config("upernet_swin_t_demo", {"data_root": str(folder)}, notes)
    assert cfg.train_dataloader.dataset.data_root == cfg.val_dataloader.dataset.data_root == str(folder)
    assert notes and "data_root" in notes[0]


def test_max_iters_moves_the_schedule_and_intervals_unless_set():
    notes = []
    cfg = load_config("upernet_swin_t_demo", {"train_cfg.max_iters": 20}, notes)
    assert [(s.begin, s.end) for s in cfg.param_scheduler] == [(0, 2), (2, 20)]
    assert cfg.default_hooks.checkpoint.interval == 20
    assert cfg.train_cfg.val_interval == 4
    assert len(notes) == 4 and all(n.startswith("train_cfg.max_iters 200 -> 20: scaled") for n in notes)
    cfg = load_config("upernet_swin_t_demo", {"train_cfg.max_iters": 20, "train_cfg.val_interval": 20,
                                              "default_hooks.checkpoint.interval": 10})
    assert (cfg.train_cfg.val_interval, cfg.default_hooks.checkpoint.interval) == (20, 10)
    assert cfg.param_scheduler[-1].end == 20


def test_max_epochs_moves_epoch_schedulers():
    cfg = load_config("swin_unet_t_synapse", {"train_cfg.max_epochs": 3})
    assert cfg.param_scheduler[-1].end == 3
    assert cfg.train_cfg.val_interval == 1


def test_an_override_of_the_wrong_kind_names_the_key():
    with pytest.raises(ConfigError, match=r"optim_wrapper.optimizer.lr must be a number \(the config has 0.001\), "
                                          r"got str 'abc'"):
        load_config("upernet_swin_t_demo", {"optim_wrapper.optimizer.lr": "abc"})
    with pytest.raises(ConfigError, match="train_cfg.max_iters must be an integer"):
        load_config("upernet_swin_t_demo", {"train_cfg.max_iters": 2.5})
    assert load_config("upernet_swin_t_demo", {"optim_wrapper.optimizer.lr": 1}).optim_wrapper.optimizer.lr == 1


MR = SHARED_DATA / "medical"


@pytest.mark.skipif(not (MR / "mr_crop.nii.gz").is_file(), reason="needs ../shared/data/medical")
def test_a_nifti_folder_trains_swin_unet_with_the_config_window(tmp_path):
    import shutil

    for case in ("case_a", "case_b"):
        for kind, name in (("imagesTr", "mr_crop.nii.gz"), ("labelsTr", "mr_crop_label.nii.gz")):
            (tmp_path / kind).mkdir(exist_ok=True)
            shutil.copy(MR / name, tmp_path / kind / f"{case}.nii.gz")
    cfg = load_config("swin_unet_t_nifti", {"train_dataloader.dataset.window": "mr"})
    notes = use_data_folder(cfg, str(tmp_path), "background,left,right")
    assert "NiftiSliceDataset (window 'mr'), 3 classes" in notes[0]
    assert cfg.model.decode_head.num_classes == 3
    train, val = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    assert (train.cases, val.cases, train.window, val.window) == (["case_a"], ["case_b"], "mr", "mr")
    check_datasets(cfg)
    assert check_samples(cfg) == 70  # 35 slices per case


@pytest.mark.skipif(not (MR / "mr_crop.nii.gz").is_file(), reason="needs ../shared/data/medical")
def test_nifti_classes_come_from_dataset_json_or_are_asked_for(tmp_path):
    import json
    import shutil

    for kind, name in (("imagesTr", "mr_crop.nii.gz"), ("labelsTr", "mr_crop_label.nii.gz")):
        (tmp_path / kind).mkdir()
        shutil.copy(MR / name, tmp_path / kind / "case_a.nii.gz")
    cfg = load_config("swin_unet_t_nifti")
    with pytest.raises(FileNotFoundError, match="names no classes.*classes.txt.*dataset.json.*--classes"):
        use_data_folder(cfg, str(tmp_path))
    (tmp_path / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "left", "2": "right"},
        "training": [{"image": "./imagesTr/case_a.nii.gz", "label": "./labelsTr/case_a.nii.gz"}]}))
    use_data_folder(cfg, str(tmp_path))
    assert cfg.train_dataloader.dataset.classes == ["background", "left", "right"]
    assert cfg.train_dataloader.dataset.cases == cfg.val_dataloader.dataset.cases == ["case_a"]  # one case: both
