"""Claims about checkpoint conversion that mutation testing showed no other test makes: the rename rule engine
(``apply_rules``), the resizing of position embeddings, bias tables and patch kernels (``resize_tensor``), the
fit's policies and messages. References are written out here (``F.interpolate`` as the official Swin, MAE and
mmseg code calls it; timm's documented ``adapt_input_conv`` rule), never computed with densekit's own helpers."""
from __future__ import annotations

import importlib
import re

import pytest
import torch
import torch.nn.functional as F

from densekit.convert.fit import FitPolicy, fit, swin_unet_policy, whole_model_policy
from densekit.convert.report import NOT_IN_CHECKPOINT, CheckpointError, LoadReport
from densekit.convert.resize import resize_tensor
from densekit.convert.rules import Rule, apply_rules, num_stages, with_prefix

T = torch.zeros
# densekit.convert exports the function ``fit``, which hides its module of the same name.
fit_module = importlib.import_module("densekit.convert.fit")
rules_module = importlib.import_module("densekit.convert.rules")


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _bicubic_grid(embed: torch.Tensor, src: tuple[int, int], dst: tuple[int, int]) -> torch.Tensor:
    """``(1, h*w, C)`` -> ``(1, H*W, C)``: the official Swin / MAE / mmseg bicubic resize, written out."""
    channels = embed.shape[-1]
    grid = embed.reshape(1, src[0], src[1], channels).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=dst, mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], channels)


# ------------------------------------------------------------------------------------------ apply_rules
def test_rules_rename_the_matched_span_with_templates_and_context_and_record_it():
    rules = [Rule(r"^layers\.(\d+)\.", r"stages.\1."), Rule(r"^norm\.", "out_norms.{last}.")]
    out, report = apply_rules({"layers.2.w": T(1), "norm.b": T(2), "keep.x": T(3)}, rules, {"last": 3})
    assert list(out) == ["stages.2.w", "out_norms.3.b", "keep.x"]
    assert report.renamed == [("layers.2.w", "stages.2.w"), ("norm.b", "out_norms.3.b")]
    assert report.permuted == [] and report.dropped == []


def test_a_callable_rule_gets_the_context_and_may_drop_a_key():
    def last_norm_only(match: re.Match, context) -> str | None:
        return "norm." if int(match.group(1)) == context["last"] else None

    rules = [Rule(r"^norm(\d)\.", last_norm_only, why="only the last norm is the official one")]
    out, report = apply_rules({"norm1.w": T(1), "norm3.w": T(2), "x": T(3)}, rules, {"last": 3})
    assert list(out) == ["norm.w", "x"]
    assert report.dropped == [("norm1.w", "only the last norm is the official one")]


def test_dropped_keys_carry_the_rules_reason_or_a_default_and_the_rest_still_converts():
    rules = [Rule(r"^head\.", None, why="classifier head"), Rule(r"^aux\.", None), Rule(r"^a\.", "b.")]
    out, report = apply_rules({"head.w": T(1), "aux.w": T(1), "a.w": T(2)}, rules)
    assert out.keys() == {"b.w"}
    assert report.dropped == [("head.w", "classifier head"), ("aux.w", "dropped by the key table")]


def test_the_first_matching_rule_wins():
    out, _ = apply_rules({"a.b": T(1)}, [Rule(r"b$", "first"), Rule(r"^a", "second")])
    assert list(out) == ["a.first"]


def test_value_rules_rewrite_the_tensor_and_report_it_as_permuted():
    value = torch.arange(4.0)
    out, report = apply_rules({"m.w": value, "n.w": value}, [Rule(r"^m\.", "k.", value=lambda t: t.flip(0))])
    assert torch.equal(out["k.w"], torch.tensor([3.0, 2.0, 1.0, 0.0])) and out["n.w"] is value
    assert report.permuted == ["k.w"] and report.renamed == [("m.w", "k.w")]


def test_two_keys_mapping_to_one_name_the_both_and_the_target():
    with pytest.raises(CheckpointError, match=r"keys 'x\.w' and 'y\.w' both map to 'z\.w'"):
        apply_rules({"x.w": T(1), "y.w": T(1)}, [Rule(r"^[xy]\.", "z.")])


def test_num_stages_is_one_more_than_the_largest_stage_index_under_the_prefix():
    keys = {"layers.0.w": T(1), "layers.3.blocks.0.w": T(1), "layers.10": T(1), "layersx.7.w": T(1),
            "norm.layers.9.w": T(1)}
    assert num_stages(keys, "layers") == 4
    assert num_stages({"stages.1.w": T(1)}, "layers") == 0


def test_with_prefix_puts_the_prefix_in_front_of_every_key_sharing_the_tensors():
    value = T(2)
    out = with_prefix({"a.w": value, "b": value}, "backbone.")
    assert list(out) == ["backbone.a.w", "backbone.b"] and out["backbone.a.w"] is value


@pytest.mark.parametrize("module, call", [
    (rules_module, lambda **kw: rules_module.apply_rules({"a": T(1)}, [], **kw)),
    (fit_module, lambda **kw: fit_module.fit({"a": T(1)}, {"a": T(1)}, LoadReport(), FitPolicy(), **kw)),
])
def test_progress_bars_are_off_unless_asked_and_then_shown_only_on_a_terminal(monkeypatch, module, call):
    """``disable=True`` hides the bar; ``disable=None`` (asked for) lets tqdm show it on a terminal only. A bar
    that is shown is transient (``leave=False``) and named."""
    seen: list[dict] = []

    def spy(iterable, **kwargs):
        seen.append(kwargs)
        return iterable

    monkeypatch.setattr(module, "tqdm", spy)
    call()
    call(progress=True)
    assert seen[0]["disable"] is True and seen[1]["disable"] is None
    assert all(kwargs["leave"] is False for kwargs in seen)
    assert seen[0]["desc"] == ("converting" if module is rules_module else "fitting")
    if module is rules_module:
        assert seen[0]["total"] == 1


# ------------------------------------------------------------------------------------------ resize_tensor
@pytest.mark.parametrize("key", ["absolute_pos_embed", "backbone.absolute_pos_embed"])
def test_swin_absolute_pos_embed_is_resized_bicubically_onto_the_models_grid(key):
    embed = _randn(1, 4, 5)
    out = resize_tensor(key, embed, (1, 6, 5), pos_grid=(2, 3))
    torch.testing.assert_close(out, _bicubic_grid(embed, (2, 2), (2, 3)))
    torch.testing.assert_close(resize_tensor(key, embed, (1, 9, 5)), _bicubic_grid(embed, (2, 2), (3, 3)))
    assert resize_tensor(key, embed, (1, 9, 4)) is None  # other channels: another model


def test_fit_passes_the_pos_grid_on():
    embed = _randn(1, 4, 5)
    report = LoadReport()
    out = fit({"absolute_pos_embed": embed}, {"absolute_pos_embed": T(1, 6, 5)}, report, FitPolicy(),
              pos_grid=(2, 3))
    torch.testing.assert_close(out["absolute_pos_embed"], _bicubic_grid(embed, (2, 2), (2, 3)))
    assert report.resized == [("absolute_pos_embed", (1, 4, 5), (1, 6, 5))]


def test_a_non_square_absolute_pos_embed_raises_naming_the_key():
    with pytest.raises(CheckpointError, match=r"^backbone\.absolute_pos_embed: .*not a square grid"):
        resize_tensor("backbone.absolute_pos_embed", T(1, 5, 2), (1, 4, 2))


@pytest.mark.parametrize("key", ["model.pos_embed", "backbone.model.pos_embed"])
def test_vit_pos_embed_keeps_the_class_slot_and_resizes_the_patch_grid(key):
    embed = _randn(1, 1 + 4, 3)
    out = resize_tensor(key, embed, (1, 1 + 6, 3), pos_grid=(2, 3))
    torch.testing.assert_close(out[:, :1], embed[:, :1])
    torch.testing.assert_close(out[:, 1:], _bicubic_grid(embed[:, 1:], (2, 2), (2, 3)))
    square = resize_tensor(key, embed, (1, 1 + 9, 3))
    torch.testing.assert_close(square[:, 1:], _bicubic_grid(embed[:, 1:], (2, 2), (3, 3)))


def test_a_vit_pos_embed_that_is_not_square_raises_naming_the_key():
    with pytest.raises(CheckpointError, match=r"^backbone\.model\.pos_embed: "):
        resize_tensor("backbone.model.pos_embed", T(1, 1 + 5, 2), (1, 1 + 4, 2))


def test_bias_tables_resize_bicubically_by_default_like_official_swin():
    table = _randn(9, 2)  # window 2: a 3 x 3 grid of offsets per head
    out = resize_tensor("layers.0.blocks.0.attn.relative_position_bias_table", table, (25, 2))
    grid = table.permute(1, 0).reshape(1, 2, 3, 3)
    expected = F.interpolate(grid, size=(5, 5), mode="bicubic", align_corners=False).reshape(2, 25).permute(1, 0)
    torch.testing.assert_close(out, expected)


def test_bias_tables_of_another_head_count_or_rank_do_not_fit_and_do_not_raise():
    key = "attn.relative_position_bias_table"
    assert resize_tensor(key, T(170, 3), (169, 4)) is None  # heads differ: not even checked as a table
    assert resize_tensor(key, T(169), (225, 3)) is None
    assert resize_tensor(key, T(169, 3), (200, 3)) is None  # no (2W-1)^2 table has 200 rows


def test_a_bias_table_that_is_not_a_grid_raises_naming_the_key_and_shape():
    key = "blocks.0.attn.relative_position_bias_table"
    with pytest.raises(CheckpointError, match=rf"^{re.escape(key)}: .* \(shape \(170, 3\)\)"):
        resize_tensor(key, T(170, 3), (169, 3))


@pytest.mark.parametrize("key", ["patch_embed.proj.weight", "backbone.model.patch_embed.proj.weight"])
def test_patch_kernels_adapt_to_other_input_channels_as_timm_does(key):
    """timm ``adapt_input_conv``: one channel sums the RGB kernels; more repeat them, scaled by 3 / in_chans."""
    kernel = _randn(4, 3, 2, 2)
    torch.testing.assert_close(resize_tensor(key, kernel, (4, 1, 2, 2)), kernel.sum(1, keepdim=True))
    torch.testing.assert_close(resize_tensor(key, kernel, (4, 6, 2, 2)), torch.cat([kernel, kernel], 1) * 0.5)
    assert resize_tensor(key, kernel, (8, 1, 2, 2)) is None  # other embedding width
    assert resize_tensor(key, kernel, (4, 1, 4, 4)) is None  # other patch size


def test_only_the_patch_kernel_is_adapted_to_other_input_channels():
    assert resize_tensor("backbone.stem.conv.weight", _randn(4, 3, 2, 2), (4, 1, 2, 2)) is None


# ------------------------------------------------------------------------------------------ policies
def test_whole_model_policy_forbids_stray_auxiliary_keys_when_the_model_has_an_auxiliary_head():
    target = {"auxiliary_head.w": T(1)}
    state = {"auxiliary_head.extra": T(1), "auxiliary_head.w": T(1)}
    with pytest.raises(CheckpointError, match=r"unexpected keys .*auxiliary_head\.extra"):
        fit(state, target, LoadReport(), whole_model_policy(state, target))


def test_whole_model_policy_explains_step_counters_and_a_missing_or_extra_auxiliary_head():
    target = {"bn.num_batches_tracked": T(()), "auxiliary_head.w": T(1), "w": T(1)}
    report = LoadReport()
    fit({"w": T(1)}, target, report, whole_model_policy(["w"], target))
    assert dict(report.missing).keys() == {"bn.num_batches_tracked", "auxiliary_head.w"}
    assert all(why for _, why in report.missing)
    report = LoadReport()
    state = {"w": T(1), "auxiliary_head.w": T(1)}
    fit(state, {"w": T(1)}, report, whole_model_policy(state, ["w"]))
    assert [key for key, _ in report.dropped] == ["auxiliary_head.w"] and report.dropped[0][1]


def test_swin_unet_policy_strict_forbids_gaps_and_non_strict_reports_them():
    with pytest.raises(CheckpointError, match=r"1 missing keys .*: v"):
        fit({"w": T(1)}, {"w": T(1), "v": T(1)}, LoadReport(), swin_unet_policy())
    report = LoadReport()
    fit({"w": T(1)}, {"w": T(1), "v": T(1)}, report, swin_unet_policy(strict=False))
    assert report.missing == [("v", NOT_IN_CHECKPOINT)]


# ------------------------------------------------------------------------------------------ fit
def test_fit_goes_on_after_a_dropped_or_unexpected_key():
    report = LoadReport()
    out = fit({"gone": T(1), "w": T(2)}, {"w": T(2)}, report, FitPolicy(drop_misfits=True))
    assert out.keys() == {"w"} and report.dropped == [("gone", "not in the model")]
    with pytest.raises(CheckpointError) as error:
        fit({"gone": T(1), "w": T(3)}, {"w": T(2)}, LoadReport(), FitPolicy())
    assert "1 unexpected keys" in str(error.value) and "1 shape mismatches" in str(error.value)


def test_a_dropped_misfit_names_both_shapes():
    report = LoadReport()
    fit({"w": T(3)}, {"w": T(2)}, report, FitPolicy(drop_misfits=True))
    assert report.dropped == [("w", "shape (3,) does not fit the model's (2,)")]


def test_misfit_messages_name_the_checkpoint_key_only_when_it_was_renamed():
    report = LoadReport(renamed=[("old.x", "x")])
    with pytest.raises(CheckpointError) as error:
        fit({"x": T(1), "w": T(3)}, {"w": T(2)}, report, FitPolicy())
    message = str(error.value)
    assert message.startswith("checkpoint does not fit the model:")
    assert "x (checkpoint: old.x) (1,)" in message
    assert re.search(r"w: checkpoint \(3,\), model \(2,\)$", message, re.MULTILINE)


# ------------------------------------------------------------------------ position-embedding guards (resize)
@pytest.mark.parametrize("key", ["absolute_pos_embed", "backbone.model.pos_embed"])
@pytest.mark.parametrize(("value", "shape"), [
    ((1, 16, 8), (1, 36, 4)),  # another embedding width: not a resize
    ((16, 8), (1, 36, 8)),     # a 2-D value
    ((1, 16, 8), (1, 36)),     # a 2-D model tensor
])
def test_position_embeddings_of_another_layout_are_not_resized(key, value, shape):
    assert resize_tensor(key, _randn(*value), shape) is None


def test_a_vit_pos_embed_without_class_slot_resizes_its_whole_grid():
    """timm's ``no_embed_class`` layout: no leading slot (P = 0), every position is a patch."""
    embed = _randn(1, 4, 3)
    out = resize_tensor("backbone.model.pos_embed", embed, (1, 9, 3), pos_grid=(3, 3))
    torch.testing.assert_close(out, _bicubic_grid(embed, (2, 2), (3, 3)))


@pytest.mark.parametrize(("positions", "grid", "length"), [(1, (2, 2), 5), (5, (3, 3), 8)])
def test_a_vit_pos_embed_that_cannot_hold_its_class_slots_is_refused_by_name(positions, grid, length):
    """(1 position, 1 class slot + a 2x2 grid): nothing left for the patches; (a 3x3 grid in 8 slots): -1 slots."""
    message = f"backbone.model.pos_embed: pos_embed of {positions} positions does not fit a {grid} grid with {length}"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        resize_tensor("backbone.model.pos_embed", _randn(1, positions, 8), (1, length, 8), pos_grid=grid)
