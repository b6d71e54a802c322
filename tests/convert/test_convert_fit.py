"""The one fit (densekit.convert.fit) every loader ends with: policies say what may be dropped, missing or of
another shape, and why; resizable tensors are resized; everything else raises one error naming keys, shapes and
the fix. The last test checks that the four loaders (backbone ``pretrained=``, whole model, Swin-Unet checkpoint,
ImageNet Swin into a Swin-Unet) all go through it."""
from __future__ import annotations

import pytest
import torch

from densekit.backbones import pretrained as backbone_pretrained
from densekit.backbones.swin import SwinTransformer
from densekit.convert.fit import (
    BACKBONE_POLICY,
    SWIN_UNET_IMAGENET_POLICY,
    Allowance,
    FitPolicy,
    fit,
    swin_unet_policy,
    whole_model_policy,
)
from densekit.convert.report import NOT_IN_CHECKPOINT, CheckpointError, LoadReport
from densekit.convert.swin_unet import densekit_to_official
from densekit.inference import checkpoint as inference_checkpoint
from densekit.layers.rel_pos_bias import resize_bias_table
from densekit.models import SwinUnet

T = torch.zeros


def test_exact_fit_loads_everything_and_renames_name_the_checkpoint_keys():
    target = {"a.weight": T(2, 3), "b": T(4)}
    report = LoadReport(renamed=[("old.a.weight", "a.weight")])
    out = fit({"a.weight": torch.ones(2, 3), "b": torch.ones(4)}, target, report, FitPolicy())
    assert out.keys() == target.keys() and not report.missing and not report.dropped and not report.resized
    with pytest.raises(CheckpointError, match=r"a\.weight: checkpoint \(3, 3\), model \(2, 3\) \(checkpoint key "
                                              r"old\.a\.weight\)"):
        fit({"a.weight": T(3, 3), "b": T(4)}, target, report, FitPolicy())


def test_policy_explains_drops_and_gaps_and_nothing_else():
    policy = FitPolicy(may_drop=(Allowance(r"^extra\.", "not needed"),),
                       may_miss=(Allowance(r"\.num_batches_tracked$", "step counter"),))
    target = {"w": T(2), "bn.num_batches_tracked": T(())}
    report = LoadReport()
    out = fit({"w": T(2), "extra.x": T(5)}, target, report, policy)
    assert out.keys() == {"w"}
    assert report.dropped == [("extra.x", "not needed")]
    assert report.missing == [("bn.num_batches_tracked", "step counter")] and report.missing_weights() == []
    with pytest.raises(CheckpointError) as error:
        fit({"w": T(2), "other.x": T(5)}, {**target, "v": T(1)}, LoadReport(), policy)
    message = str(error.value)
    assert "1 unexpected keys" in message and "other.x (5,)" in message
    assert "1 missing keys" in message and "v" in message and "num_batches_tracked" not in message


def test_drop_misfits_reports_what_keeps_its_random_initialisation():
    """The official Swin-Unet ImageNet rule: whatever does not fit is dropped, and the model's tensor is then
    random, which ``missing_weights`` warns about."""
    report = LoadReport()
    out = fit({"w": T(3), "gone": T(1)}, {"w": T(2), "kept": T(1)}, report, SWIN_UNET_IMAGENET_POLICY)
    assert out == {}
    assert {key for key, _ in report.dropped} == {"w", "gone"}
    assert set(report.missing_weights()) == {"w", "kept"}
    assert dict(report.missing)["kept"] == NOT_IN_CHECKPOINT


def test_may_differ_keeps_the_models_classifier_without_a_warning():
    report = LoadReport()
    target = {"decode_head.conv_seg.weight": T(4, 96, 1, 1), "w": T(1)}
    out = fit({"decode_head.conv_seg.weight": T(9, 96, 1, 1), "w": T(1)}, target, report,
              swin_unet_policy(new_classes=True))
    assert out.keys() == {"w"} and report.missing_weights() == []
    assert [key for key, _ in report.missing] == ["decode_head.conv_seg.weight"]
    with pytest.raises(CheckpointError, match="num_classes"):
        fit({"decode_head.conv_seg.weight": T(9, 96, 1, 1), "w": T(1)}, target, LoadReport(), swin_unet_policy())


@pytest.mark.parametrize("method", ["bicubic", "geometric"])
def test_bias_tables_are_resized_at_any_depth(method):
    table = torch.randn(169, 3, generator=torch.Generator().manual_seed(0))
    key = "decode_head.stages.0.blocks.1.attn.relative_position_bias_table"
    report = LoadReport()
    out = fit({key: table}, {key: T(225, 3)}, report, FitPolicy(), bias_resize=method)
    assert torch.equal(out[key], resize_bias_table(table, 8, method))
    assert report.resized == [(key, (169, 3), (225, 3))]


def test_mirrored_pairs_keep_only_what_was_loaded():
    report = LoadReport(mirrored=[("layers.0.x", "dec.x"), ("layers.0.y", "dec.y")])
    fit({"dec.x": T(1), "dec.y": T(2)}, {"dec.x": T(1), "dec.y": T(3)}, report, SWIN_UNET_IMAGENET_POLICY)
    assert report.mirrored == [("layers.0.x", "dec.x")]


def test_whole_model_policy_and_hints():
    target = ["backbone.w", "auxiliary_head.w", "backbone.out_norms.0.weight"]
    policy = whole_model_policy(["backbone.w"], target)
    assert any(a.matches("auxiliary_head.w") for a in policy.may_miss)
    assert not whole_model_policy(["auxiliary_head.w"], ["backbone.w"]).may_miss[1:]
    assert whole_model_policy(["auxiliary_head.w"], ["backbone.w"]).may_drop[0].matches("auxiliary_head.w")
    with pytest.raises(CheckpointError, match="out_norm=False"):
        fit({"backbone.w": T(1)}, {"backbone.w": T(1), "backbone.out_norms.0.weight": T(1)}, LoadReport(),
            FitPolicy())
    with pytest.raises(CheckpointError, match="this is a Swin-Unet checkpoint .* the config builds EncoderDecoder"):
        fit({"decode_head.expand.w": T(1)}, {}, LoadReport(), FitPolicy(), model_name="EncoderDecoder")
    with pytest.raises(ValueError, match="bias_resize"):
        fit({}, {}, LoadReport(), BACKBONE_POLICY, bias_resize="nearest")


# ------------------------------------------------------------------------- the four loaders use it
TINY = dict(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 4), window_size=7, drop_path_rate=0.0)


@pytest.fixture
def fit_calls(monkeypatch) -> list[FitPolicy]:
    """Every policy ``fit`` is called with, from the loaders' modules."""
    calls: list[FitPolicy] = []

    def spy(state_dict, target, report, policy, *args, **kwargs):
        calls.append(policy)
        return fit(state_dict, target, report, policy, *args, **kwargs)

    monkeypatch.setattr(backbone_pretrained, "fit", spy)
    monkeypatch.setattr(inference_checkpoint, "fit", spy)
    return calls


def test_every_loader_goes_through_the_one_fit(fit_calls):
    torch.manual_seed(0)
    swin = SwinTransformer(**TINY)
    backbone_pretrained.load_state_dict_from(SwinTransformer(**TINY), {"model": swin.state_dict()}, verbose=False)
    unet = SwinUnet(backbone=dict(TINY, in_chans=3), decode_head=dict(num_classes=3))
    inference_checkpoint.load_model_checkpoint(unet, {"state_dict": unet.state_dict()})
    backbone_pretrained.load_swin_unet_checkpoint(unet, densekit_to_official(unet.state_dict()), verbose=False)
    backbone_pretrained.load_imagenet_swin(unet, {"model": swin.state_dict()}, verbose=False)
    assert len(fit_calls) == 4
    assert fit_calls[0] is BACKBONE_POLICY and fit_calls[3] is SWIN_UNET_IMAGENET_POLICY
    assert fit_calls[2] == swin_unet_policy()


# ------------------------------------------------------------------------------ the misfit message
def test_misfit_error_lists_each_kind_with_its_first_keys_then_the_hints():
    """The whole message, word for word: the kinds in order, 8 keys each then the count left, one hint per cause."""
    from densekit.convert.fit import misfit_error

    unexpected = [f"backbone.stages.{i}.w" for i in range(10)] + ["backbone.out_norms.0.weight (2,)"]
    missing = ["decode_head.x"]
    mismatched = ["decode_head.conv_seg.weight: checkpoint (5,), model (7,)",
                  "rpn_head.rpn_cls.weight: checkpoint (3,), model (9,)"]
    message = str(misfit_error("EncoderDecoder", unexpected, missing, mismatched, ["backbone.a"]))
    assert message == (
        "checkpoint does not fit the EncoderDecoder:\n"
        "  11 unexpected keys (no such parameter in the model): "
        + "; ".join(unexpected[:8]) + "; ... (+3)\n"
        "  1 missing keys (model parameters the checkpoint lacks): decode_head.x\n"
        "  2 shape mismatches densekit cannot resize: " + "; ".join(mismatched) + "\n"
        "  hint: the checkpoint normalises every backbone output (HF hidden_states_norms, mmseg norm0..3): "
        "set out_norm=True in the config's backbone\n"
        "  hint: the RPN head's anchors per location differ: set the anchor generator's scales and ratios to the "
        "checkpoint's (mmdet and torchvision: scales=[8], ratios=[0.5, 1.0, 2.0])\n"
        "  hint: the classifier (conv_seg) differs in size: set num_classes to the checkpoint's\n"
        "  hint: many backbone keys differ: weights of another variant (e.g. swin_s into swin_t)? is the config's "
        "backbone the checkpoint's?")
    exactly_the_limit = [f"k{i}" for i in range(8)]  # all shown, no "... (+0)"
    assert str(misfit_error("RPN", exactly_the_limit, [], [], [])) == (
        "checkpoint does not fit the RPN:\n  8 unexpected keys (no such parameter in the model): " + "; ".join(
            exactly_the_limit))


def test_misfit_hints_name_only_the_causes_present():
    from densekit.convert.fit import misfit_hints

    norms = ["backbone.out_norms.0.weight"]
    assert misfit_hints("EncoderDecoder", [], [], [], ["backbone.a"]) == []
    assert misfit_hints("EncoderDecoder", [], [], [], norms) == []  # has norms, none missing: nothing to say
    assert misfit_hints("EncoderDecoder", norms, [], [], norms) == []  # the model has them too
    assert misfit_hints("EncoderDecoder", [], norms, [], norms) == [
        "the checkpoint has no per-stage output norms: set out_norm=False in the config's backbone"]
    assert misfit_hints("EncoderDecoder", [], norms, [], ["backbone.a"]) == []
    assert misfit_hints("RPN", [], [], ["rpn_head.rpn_reg.weight: checkpoint (3,)"], []) == [misfit_hints(
        "RPN", [], [], ["x.rpn_cls.w"], [])[0]] and len(misfit_hints("RPN", [], [], ["x.rpn_reg.w"], [])) == 1
    assert misfit_hints("EncoderDecoder", [], ["backbone.a", "stages.b", "backbone.c"],
                        ["backbone.d", "backbone.e"], []) == []  # 3 backbone keys differ, mismatches not counted
    assert len(misfit_hints("EncoderDecoder", ["backbone.a", "stages.b"], ["backbone.c", "backbone.d", "x.e"],
                            [], [])) == 0  # 4 is not many
    assert len(misfit_hints("EncoderDecoder", ["backbone.a", "stages.b", "backbone.f"],
                            ["backbone.c", "backbone.d"], [], [])) == 1  # 5 is


def test_a_checkpoint_of_another_architecture_gets_that_hint_alone():
    from densekit.convert.fit import misfit_hints

    unexpected = ["decode_head.expand.0.weight (4, 4)", "backbone.out_norms.0.weight"] + [f"backbone.{i}" for i in
                                                                                           range(6)]
    assert misfit_hints("EncoderDecoder", unexpected, [], ["decode_head.conv_seg.weight"], []) == [
        "this is a Swin-Unet checkpoint (SwinUnet) but the config builds EncoderDecoder: use a Swin-Unet config "
        "(configs/*.py) or a checkpoint of this model"]
    assert misfit_hints("SwinUnet", ["decode_head.expand.0.weight (4, 4)"], [], [], []) == []
