"""Misspelt config keys are named with the nearest valid key, before anything is built."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from densekit.apis import load_config
from densekit.engine.config_check import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "configs" / "upernet_swin_t_demo.py")


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.py")))
def test_every_shipped_config_passes(config):
    assert load_config(str(ROOT / "configs" / config)).model


@pytest.mark.parametrize("option, message", [
    ({"model.decode_haed": {}}, r"config key model\.decode_haed: EncoderDecoder has no argument 'decode_haed'; "
                                r"did you mean 'decode_head'\?"),
    ({"train_dataloader.batch_sise": 4}, r"train_dataloader\.batch_sise: .*did you mean 'batch_size'\?"),
    ({"model.backbone.window_sise": 7}, r"model\.backbone\.window_sise: swin_t .*did you mean 'window_size'\?"),
    ({"model.decode_head.chanels": 8}, r"model\.decode_head\.chanels: UPerHead .*did you mean 'channels'\?"),
    ({"val_dataloader.dataset.img_dri": "x"}, r"val_dataloader\.dataset\.img_dri: DemoDataset .*'img_dir'"),
    ({"train_dataloader.dataset.pipeline": [dict(type="RandomCrop", crop_sise=8)]},
     r"train_dataloader\.dataset\.pipeline\[0\]\.crop_sise: RandomCrop .*'crop_size'"),
])
def test_misspelt_nested_keys_name_the_nearest_valid_one(option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO, option)


def test_misspelt_top_level_key(tmp_path):
    text = (ROOT / "configs" / "upernet_swin_t_demo.py").read_text().replace("param_scheduler =", "param_schedular =")
    config = tmp_path / "typo.py"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"'param_schedular' .*did you mean 'param_scheduler'\?"):
        load_config(str(config))
    config.write_text(text.replace("param_schedular =", "my_helper_value ="))  # helper variables are fine
    assert load_config(str(config)).my_helper_value



def test_the_tools_print_a_misspelt_key_as_one_line_and_exit_1():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), DEMO, "--cfg-options",
                             "train_dataloader.batch_sise=2"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.startswith("error: config key train_dataloader.batch_sise") and "'batch_size'" in result.stderr
    assert "Traceback" not in result.stderr
