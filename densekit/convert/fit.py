"""ONE fit of a converted state dict to a model's: every loader's last step before ``load_state_dict``.

``fit(converted, target, report, policy)`` checks the converted tensors key by key against the model's
state dict (only its keys and shapes are read), resizes what ``resize.py`` knows how to, and applies a
``FitPolicy`` that says what may not fit and why:

    loader                          may be dropped                  may be missing                  misfits
    backbone pretrained=            out norms the model lacks       anything (reported)             raise
    whole model (UPerNet, RPN,      an auxiliary head the           BatchNorm step counters; an     raise
      Swin-Unet)                    config lacks                    auxiliary head the ckpt lacks
    Swin-Unet checkpoint            a classifier for other classes (new_classes); nothing else     raise
    Swin-Unet from ImageNet Swin    anything that does not fit      anything (reported)             drop

Whatever the policy does not explain raises one ``CheckpointError`` naming every key, both shapes, and the
likely fix where the cause is a known config mismatch (``misfit_error``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .detect import architecture
from .report import KEEPS_RANDOM_INIT, NOT_IN_CHECKPOINT, CheckpointError, LoadReport
from .resize import check_bias_resize, resize_tensor
from .rules import StateDict, Tensors


@dataclass(frozen=True)
class Allowance:
    """Keys matching ``pattern`` (searched, anchor it as needed) may do something, for the reason ``why``."""

    pattern: str
    why: str

    def matches(self, key: str) -> bool:
        return re.search(self.pattern, key) is not None


@dataclass(frozen=True)
class FitPolicy:
    """What may not fit a model, and why.

    Attributes:
        may_drop: checkpoint keys the model has no place for that are dropped (and reported) instead of raising.
        may_miss: model keys the checkpoint may lack; they keep their initialisation, reported with the reason.
        may_differ: model keys whose checkpoint tensor may have another shape: it is dropped and the model's
            tensor kept (a classifier for another number of classes when fine-tuning).
        drop_misfits: drop every key that is not in the model or cannot be resized, reported, instead of
            raising (the official Swin-Unet ImageNet rule).
    """

    may_drop: tuple[Allowance, ...] = ()
    may_miss: tuple[Allowance, ...] = ()
    may_differ: tuple[Allowance, ...] = ()
    drop_misfits: bool = False


def _why(allowances: Iterable[Allowance], key: str) -> str | None:
    return next((allowance.why for allowance in allowances if allowance.matches(key)), None)


# ------------------------------------------------------------------------------------------ policies
ANYTHING_MISSING = Allowance(r"", NOT_IN_CHECKPOINT)
_OUT_NORMS_MISSING = Allowance(r"^out_norms\.", "output norm classification weights do not have: initialised")

BACKBONE_POLICY = FitPolicy(
    may_drop=(Allowance(r"^out_norms\.", "an output norm the model does not have (out_norm=False or fewer "
                                         "out_indices)"),),
    may_miss=(_OUT_NORMS_MISSING, ANYTHING_MISSING),
)
SWIN_UNET_IMAGENET_POLICY = FitPolicy(
    may_miss=(Allowance(r"^decode_head\.(expand|norm|up|conv_seg)\.|^decode_head\.stages\.\d+\.(concat|upsample)\.",
                        "a decoder part no Swin checkpoint has: initialised"), ANYTHING_MISSING),
    drop_misfits=True,
)


def whole_model_policy(checkpoint_keys: Iterable[str], target_keys: Iterable[str]) -> FitPolicy:
    """Strict, except for what a whole checkpoint (UPerNet, RPN, Swin-Unet) may legitimately lack or add."""
    has_aux = any(key.startswith("auxiliary_head.") for key in target_keys)
    ckpt_aux = any(key.startswith("auxiliary_head.") for key in checkpoint_keys)
    may_miss = [Allowance(r"\.num_batches_tracked$", "BatchNorm step counter, unused in inference")]
    if not ckpt_aux:
        may_miss.append(Allowance(r"^auxiliary_head\.", "no auxiliary head in the checkpoint: initialised, used only "
                                                         "in training"))
    may_drop = () if has_aux else (
        Allowance(r"^auxiliary_head\.", "the config has no auxiliary_head (it only adds a training loss)"),)
    return FitPolicy(may_drop=may_drop, may_miss=tuple(may_miss))


def swin_unet_policy(strict: bool = True, new_classes: bool = False) -> FitPolicy:
    """A whole Swin-Unet checkpoint into a ``SwinUnet``: ``strict`` forbids gaps; ``new_classes`` lets a
    classifier for another number of classes be dropped, keeping the model's (fine-tuning)."""
    differ = (Allowance(r"^decode_head\.conv_seg\.", "a classifier for another number of classes: the model's "
                                                     "initialisation is kept"),) if new_classes else ()
    return FitPolicy(may_miss=() if strict else (ANYTHING_MISSING,), may_differ=differ)


# ----------------------------------------------------------------------------------------------- fit
def fit(
    state_dict: Tensors,
    target: Mapping[str, torch.Tensor],
    report: LoadReport,
    policy: FitPolicy,
    model_name: str = "model",
    bias_resize: str = "bicubic",
    pos_grid: tuple[int, int] | None = None,
    progress: bool = False,
) -> StateDict:
    """Fit a converted (model-keyed) state dict to the model's, under ``policy``.

    Args:
        state_dict: converted tensors, keyed as the model's.
        target: the model's state dict (only keys and shapes are read).
        report: the conversion's report; gains ``resized``, the policy's ``dropped`` and ``missing``; its
            ``renamed`` names checkpoint keys in messages; ``mirrored`` keeps only the copies that fit.
        policy: what may be dropped, missing or of another shape, and why (``FitPolicy``).
        model_name: the model's class name, for messages and the architecture hint.
        bias_resize: ``'bicubic'`` or ``'geometric'`` for bias tables of another window.
        pos_grid: the model's absolute-position-embedding grid (``pretrain_grid``); None: square.
        progress: a tqdm bar over the keys (shown only on a terminal).

    Returns:
        The tensors to ``load_state_dict(strict=False)``, every one in the model's shape.

    Raises:
        CheckpointError: keys or shapes the policy does not explain (``misfit_error``).
    """
    check_bias_resize(bias_resize)
    origin = {new: old for old, new in report.renamed}
    out: StateDict = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    differ: dict[str, str] = {}
    items = tqdm(state_dict.items(), desc="fitting", leave=False, disable=None if progress else True)
    for key, value in items:
        source = origin.get(key, key)
        if key not in target:
            why = "not in the model" if policy.drop_misfits else _why(policy.may_drop, key)
            if why is None:
                unexpected.append(f"{key if source == key else f'{key} (checkpoint: {source})'} {tuple(value.shape)}")
            else:
                report.dropped.append((source, why))
            continue
        shape = tuple(target[key].shape)
        fitted = value if tuple(value.shape) == shape else resize_tensor(key, value, shape, bias_resize, pos_grid)
        if fitted is None:
            why = _misfit_reason(policy, key, tuple(value.shape), shape)
            if why is None:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {shape}"
                                  + ("" if source == key else f" (checkpoint key {source})"))
            else:
                report.dropped.append((source, why))
                differ[key] = why if _why(policy.may_differ, key) else f"{why}: {KEEPS_RANDOM_INIT}"
            continue
        if fitted is not value:
            report.resized.append((key, tuple(value.shape), shape))
        out[key] = fitted
    missing = _missing(target, out, policy, differ, report)
    if unexpected or missing or mismatched:
        raise misfit_error(model_name, unexpected, missing, mismatched, list(target))
    report.mirrored = [(src, dst) for src, dst in report.mirrored if dst in out]
    return out


def _misfit_reason(policy: FitPolicy, key: str, shape: tuple[int, ...], model_shape: tuple[int, ...]) -> str | None:
    """Why a tensor of the wrong shape may be dropped, or None (it may not)."""
    why = _why(policy.may_differ, key)
    if why is None and policy.drop_misfits:
        why = f"shape {shape} does not fit the model's {model_shape}"
    return why


def _missing(target: Mapping[str, torch.Tensor], out: Tensors, policy: FitPolicy, differ: Mapping[str, str],
             report: LoadReport) -> list[str]:
    """Record the explained gaps in ``report.missing``; return the model keys nothing explains."""
    unexplained = []
    for key in target:
        if key in out:
            continue
        why = differ.get(key) or _why(policy.may_miss, key)
        if why is None:
            unexplained.append(key)
        else:
            report.missing.append((key, why))
    return unexplained


# -------------------------------------------------------------------------------------------- errors
def misfit_error(model_name: str, unexpected: list[str], missing: list[str], mismatched: list[str],
                 target_keys: list[str], limit: int = 8) -> CheckpointError:
    """One error for every loader: each kind of misfit with its first ``limit`` keys, then the hints."""
    lines = [f"checkpoint does not fit the {model_name}:"]
    for name, items in (("unexpected keys (no such parameter in the model)", unexpected),
                        ("missing keys (model parameters the checkpoint lacks)", missing),
                        ("shape mismatches densekit cannot resize", mismatched)):
        if items:
            lines.append(f"  {len(items)} {name}: " + "; ".join(items[:limit])
                         + (f"; ... (+{len(items) - limit})" if len(items) > limit else ""))
    lines += [f"  hint: {hint}" for hint in misfit_hints(model_name, unexpected, missing, mismatched, target_keys)]
    return CheckpointError("\n".join(lines))


def misfit_hints(model_name: str, unexpected: list[str], missing: list[str], mismatched: list[str],
                 target_keys: list[str]) -> list[str]:
    """Known causes of a misfit (a config that does not match the checkpoint), and their fix."""
    # Mutation testing leaves split(None) and split(<another separator>) alive here: equivalent, since keys hold no
    # whitespace and architecture() matches key prefixes, which a trailing " (shape)" does not change.
    found = architecture(item.split(" ")[0] for item in unexpected)
    if found is not None and found[1] != model_name:  # the other hints would only be symptoms of it
        return [f"this is a {found[0]} checkpoint ({found[1]}) but the config builds {model_name}: "
                f"use a {found[0]} config (configs/*.py) or a checkpoint of this model"]
    hints = []
    has_norms = any(key.startswith("backbone.out_norms.") for key in target_keys)
    if not has_norms and any(key.startswith("backbone.out_norms.") for key in unexpected):
        hints.append("the checkpoint normalises every backbone output (HF hidden_states_norms, mmseg norm0..3): "
                     "set out_norm=True in the config's backbone")
    if has_norms and any(key.startswith("backbone.out_norms.") for key in missing):
        hints.append("the checkpoint has no per-stage output norms: set out_norm=False in the config's backbone")
    if any(".rpn_cls." in key or ".rpn_reg." in key for key in mismatched):
        hints.append("the RPN head's anchors per location differ: set the anchor generator's scales and ratios "
                     "to the checkpoint's (mmdet and torchvision: scales=[8], ratios=[0.5, 1.0, 2.0])")
    if any(".conv_seg." in key for key in mismatched):
        hints.append("the classifier (conv_seg) differs in size: set num_classes to the checkpoint's")
    if sum(key.startswith(("backbone.", "stages.")) for key in unexpected + missing) > 4:
        hints.append("many backbone keys differ: weights of another variant (e.g. swin_s into swin_t)? "
                     "is the config's backbone the checkpoint's?")
    return hints
