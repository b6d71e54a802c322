"""Configs found by name as well as by path (densekit.engine.config.find_config / load_config): the shipped
configs are package data, a name works from any directory, a missing one names the nearest shipped configs, and
``_base_`` inheritance works from wherever the package's configs lie."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from densekit.engine import config as config_module
from densekit.engine.config import CONFIG_DIR, find_config, load_config, shipped_configs

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_configs_are_the_package_data_and_the_checkout_link_points_there():
    names = shipped_configs()
    assert {"upernet_swin_t_demo", "upernet_swin_t_ade", "upernet_swin_s_ade", "rpn_r50_fpn_1x_coco"} <= set(names)
    assert all(path.parent == CONFIG_DIR and path.suffix == ".py" for path in names.values())
    assert CONFIG_DIR == ROOT / "densekit" / "configs"
    assert (ROOT / "configs").resolve() == CONFIG_DIR  # the checkout's configs/ is a link to the package's


def test_pyproject_ships_the_configs_as_package_data(pyproject):
    setuptools = pyproject["tool"]["setuptools"]
    assert "configs/*.py" in setuptools["package-data"]["densekit"]


@pytest.mark.parametrize("argument", ["upernet_swin_t_demo", "upernet_swin_t_demo.py"])
def test_a_name_finds_the_shipped_config_from_any_directory(argument, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(argument) == CONFIG_DIR / "upernet_swin_t_demo.py"
    cfg = load_config(argument, {"train_cfg.max_iters": 3})
    assert cfg.train_cfg.max_iters == 3 and cfg.model.backbone.type == "swin_t"


def test_a_path_still_works_and_a_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    assert find_config(ROOT / "configs" / "upernet_swin_t_ade.py") == ROOT / "configs" / "upernet_swin_t_ade.py"
    own = tmp_path / "upernet_swin_t_demo.py"
    shutil.copy(CONFIG_DIR / "upernet_swin_t_demo.py", own)
    own.write_text(own.read_text().replace("max_iters = 200", "max_iters = 7"))
    monkeypatch.chdir(tmp_path)
    assert find_config("upernet_swin_t_demo.py") == Path("upernet_swin_t_demo.py")  # the local file
    assert load_config("upernet_swin_t_demo.py").train_cfg.max_iters == 7
    assert load_config("upernet_swin_t_demo").train_cfg.max_iters == 200  # no file of that name: the shipped one


def test_an_unknown_name_lists_the_nearest_shipped_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_config("upernet_swin_t_dem")
    message = str(error.value)
    assert message.startswith("config upernet_swin_t_dem is neither a file nor a config densekit ships")
    assert "nearest shipped configs: upernet_swin_t_demo, " in message
    assert "rpn_r50_fpn_1x_coco" not in message  # only the close ones
    with pytest.raises(FileNotFoundError, match=r"config file configs/nope\.py does not exist; densekit ships: "
                                                r"(\w+, )*rpn_r50_fpn_1x_coco, .*upernet_swin_t_demo"):
        find_config("configs/nope.py")  # a path that is not there: named as such, every shipped name listed


def test_a_name_with_a_directory_is_a_path_not_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="config file elsewhere/upernet_swin_t_demo.py does not exist; "
                                                "nearest shipped configs: upernet_swin_t_demo"):
        find_config("elsewhere/upernet_swin_t_demo.py")


def test_base_inheritance_works_from_the_package_location(tmp_path, monkeypatch):
    """A config with ``_base_`` loads by name from another directory, and from a copy of the configs elsewhere
    (as in site-packages after ``pip install .``): its base is read next to it, not from the checkout."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config("upernet_swin_s_ade")
    assert cfg.model.backbone.type == "swin_s"  # its own key
    assert cfg.model.decode_head.type == "UPerHead" and "train_dataloader" in cfg  # from upernet_swin_t_ade
    installed = tmp_path / "site-packages" / "densekit" / "configs"
    shutil.copytree(CONFIG_DIR, installed)
    base = installed / "upernet_swin_t_ade.py"
    base.write_text(base.read_text().replace("num_classes = 150", "num_classes = 23"))  # marks the copy's base
    monkeypatch.setattr(config_module, "CONFIG_DIR", installed)
    assert find_config("upernet_swin_s_ade") == installed / "upernet_swin_s_ade.py"
    cfg = load_config("upernet_swin_s_ade")
    assert cfg.model.backbone.type == "swin_s" and cfg.model.decode_head.num_classes == 23
