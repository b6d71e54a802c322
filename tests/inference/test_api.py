"""densekit.apis: init_model on densekit/converted checkpoints, inference_model at the image's own size, load_config."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers.paths import scratch_dir

from densekit.apis import build_model, compile_inference, inference_model, init_model, load_config
from densekit.convert import CheckpointError
from densekit.inference.convert_files import convert_segmentor_file
from densekit.structures import SegDataSample

CLASSES = ["background", "road", "car"]
CONFIG = """
default_scope = "densekit"
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", size_divisor=32),
    backbone=dict(type="resnet18", pretrained={pretrained!r}),
    decode_head=dict(type="UPerHead", in_channels=[64, 128, 256, 512], channels=16, num_classes={num_classes}),
    auxiliary_head=dict(type="FCNHead", in_channels=256, channels=8, num_classes={num_classes}),
)
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(128, 64), keep_ratio=True),
    dict(type="LoadAnnotations"),
    dict(type="PackSegInputs"),
]
"""


def write_config(path: Path, num_classes: int = 3, pretrained: str | None = None) -> Path:
    path.write_text(CONFIG.format(num_classes=num_classes, pretrained=pretrained))
    return path


@pytest.fixture(scope="module")
def files(request):
    """A config, a trained-looking densekit checkpoint of its model (mmengine layout), and an image file."""
    root = scratch_dir(request, "apis")
    config = write_config(root / "upernet_r18.py")
    torch.manual_seed(0)
    model = build_model(load_config(str(config)))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 1.5)
    checkpoint = root / "iter_100.pth"
    torch.save({"meta": {"dataset_meta": {"classes": CLASSES}}, "state_dict": model.state_dict()}, checkpoint)
    image = root / "scene.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8))
    return dict(config=config, checkpoint=checkpoint, image=image, root=root, state_dict=model.state_dict())


def _check_prediction(sample: SegDataSample, shape: tuple[int, int]) -> None:
    assert isinstance(sample, SegDataSample)
    assert sample.pred_sem_seg.shape == shape and sample.pred_sem_seg.data.shape == (1, *shape)
    assert sample.seg_logits.data.shape == (len(CLASSES), *shape)
    assert sample.pred_sem_seg.data.max() < len(CLASSES)


def test_init_model_on_a_torch_saved_checkpoint_and_inference(files):
    model = init_model(str(files["config"]), str(files["checkpoint"]))
    assert not model.training and model.dataset_meta == {"classes": CLASSES}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in files["state_dict"].items())
    from_path = inference_model(model, files["image"])  # resized to 64 rows by the pipeline, restored to 90x140
    assert from_path.img_shape != from_path.ori_shape
    _check_prediction(from_path, (90, 140))
    from_array = inference_model(model, cv2.imread(str(files["image"])))
    _check_prediction(from_array, (90, 140))
    torch.testing.assert_close(from_array.seg_logits.data, from_path.seg_logits.data)


def test_init_model_on_a_converted_checkpoint(files):
    dst = files["root"] / "converted.safetensors"
    report = convert_segmentor_file(files["checkpoint"], dst, str(files["config"]))
    assert report.layout == "densekit" and report.dataset_meta == {"classes": CLASSES}
    model = init_model(str(files["config"]), str(dst))
    assert model.dataset_meta == {"classes": CLASSES} and model.load_report.layout == "densekit"
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in files["state_dict"].items())
    _check_prediction(inference_model(model, files["image"]), (90, 140))


def test_init_model_skips_backbone_pretrained_and_leaves_the_config_alone(files):
    config = write_config(files["root"] / "with_pretrained.py", pretrained="no/such/file.pth")
    model = init_model(str(config), str(files["checkpoint"]))  # the checkpoint holds the backbone
    assert model.cfg.model.backbone.pretrained == "no/such/file.pth"
    with pytest.raises(FileNotFoundError, match="no/such/file.pth"):
        init_model(str(config))  # without a checkpoint the backbone weights are loaded, and missing


def test_init_model_fails_on_a_checkpoint_that_does_not_fit(files):
    config = write_config(files["root"] / "five_classes.py", num_classes=5)
    with pytest.raises(CheckpointError, match=r"(?s)iter_100\.pth.*conv_seg\.weight: checkpoint \(3, 16, 1, 1\)"):
        init_model(str(config), str(files["checkpoint"]))


def test_inference_model_rejects_a_missing_image_and_a_bad_array(files):
    model = init_model(str(files["config"]), str(files["checkpoint"]))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        inference_model(model, files["root"] / "missing.png")
    with pytest.raises(ValueError, match=r"HxWx3"):
        inference_model(model, np.zeros((20, 30), dtype=np.uint8))


def test_load_config_names_a_missing_file(tmp_path):
    missing = tmp_path / "configs" / "nope.py"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_config(str(missing))


# --------------------------------------------------------------------------- compile


def _aot_eager_compile(monkeypatch) -> None:
    """torch.compile with the aot_eager backend: real dynamo tracing, without inductor's slow C++ build."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real(fn, **{**kwargs, "backend": "aot_eager"}))


def test_init_model_compile_agrees_with_eager(files, monkeypatch):
    import warnings

    from densekit.engine.compile import CompileFallbackWarning, compile_status

    _aot_eager_compile(monkeypatch)
    eager = init_model(str(files["config"]), str(files["checkpoint"]))
    compiled = init_model(str(files["config"]), str(files["checkpoint"]), compile=True)
    assert compile_status(compiled.encode_decode) == "not run" and compile_status(eager.encode_decode) == "not compiled"
    assert list(compiled.state_dict()) == list(eager.state_dict())  # compiled in place: no _orig_mod. prefix
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        out = inference_model(compiled, files["image"])
    assert compile_status(compiled.encode_decode) == "compiled"
    expected = inference_model(eager, files["image"])
    torch.testing.assert_close(out.seg_logits.data, expected.seg_logits.data, atol=1e-5, rtol=0)


def test_infer_command_compile_falls_back_to_eager_with_one_warning(files, monkeypatch, tmp_path):
    from densekit.cli import infer
    from densekit.engine.compile import CompileFallbackWarning

    def failing(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("InductorError: no C++ compiler")

        return compiled

    args = [str(files["config"]), str(files["checkpoint"]), str(files["image"]), "--out-dir"]
    infer.main([*args, str(tmp_path / "eager")])
    monkeypatch.setattr(torch, "compile", failing)
    with pytest.warns(CompileFallbackWarning, match="EncoderDecoder.encode_decode failed .*no C.. compiler") as record:
        infer.main([*args, str(tmp_path / "compiled"), "--compile"])
    assert len(record) == 1
    name = f"{files['image'].stem}_mask.png"
    eager_mask = cv2.imread(str(tmp_path / "eager" / name), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.imread(str(tmp_path / "compiled" / name), cv2.IMREAD_UNCHANGED), eager_mask)


def test_compile_inference_picks_the_inference_path():
    from densekit.engine.compile import CompiledOrEager

    class FeaturesOnly(torch.nn.Module):  # an RPN's shape: extract_feat, no encode_decode
        def extract_feat(self, x):
            return x

    model = compile_inference(FeaturesOnly())
    assert isinstance(model.__dict__["extract_feat"], CompiledOrEager)
    with pytest.raises(TypeError, match="Linear has neither encode_decode nor extract_feat"):
        compile_inference(torch.nn.Linear(2, 2))
