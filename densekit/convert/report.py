"""What a checkpoint load did, key by key (``LoadReport``), or why it could not (``CheckpointError``).

One report for every loader: a backbone's ``pretrained=``, a whole UPerNet, an RPN, a Swin-Unet (whole, or
ImageNet Swin mirrored into its decoder). Every tensor of the checkpoint is either loaded (possibly renamed,
permuted, resized or mirrored) or dropped with a reason; every model tensor is either loaded or missing
with a reason (DESIGN.md §6.8).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The reasons of model keys that keep their random initialisation unexpectedly (``missing_weights``): nothing in
# the checkpoint for them, or a tensor of another shape that a lenient policy dropped.
KEEPS_RANDOM_INIT = "keeps its random initialisation"
NOT_IN_CHECKPOINT = f"not in the checkpoint: {KEEPS_RANDOM_INIT}"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, recognised, converted or loaded into the model."""


@dataclass
class LoadReport:
    """What a conversion and load did.

    Attributes:
        kind: what was loaded: ``'backbone'``, ``'segmentor'``, ``'RPN'`` or ``'Swin-Unet'``.
        layout: the checkpoint's layout (``densekit.convert.detect``: e.g. ``'timm'``, ``'hf'``, ``'mmdet'``).
        backbone_layout: a whole model's backbone part layout (e.g. ``'mmseg'``, ``'hf-swin'``); '' otherwise.
        source: the checkpoint path.
        renamed: ``(checkpoint key, model key)`` pairs whose name changed.
        resized: ``(model key, checkpoint shape, model shape)`` for interpolated or adapted tensors.
        permuted: model keys whose values were reordered (mmseg patch-merging channels).
        mirrored: ``(checkpoint key, decoder key)``: encoder weights also loaded into the Swin-Unet decoder.
        dropped: ``(checkpoint key, why)`` for tensors not loaded.
        missing: ``(model key, why)`` for model tensors the checkpoint did not provide (left at their
            initialisation); ``why`` ends with ``KEEPS_RANDOM_INIT`` where nothing explains it.
        loaded: number of tensors copied into the model.
        dataset_meta: class names / palette found in the checkpoint (mmengine ``meta``, HF ``id2label``).
        windows: a Swin V2 load's attention windows: the model's window and the pretrained windows its position
            bias coordinates are normalised by (and a warning when they conflict with the file's); '' otherwise.
        windows_from: where a Swin V2 load's pretrained windows came from (given to the model, the file's name,
            its meta or config); '' when none was given or found.
    """

    kind: str = ""
    layout: str = ""
    backbone_layout: str = ""
    source: str = ""
    renamed: list[tuple[str, str]] = field(default_factory=list)
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    permuted: list[str] = field(default_factory=list)
    mirrored: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    loaded: int = 0
    dataset_meta: dict = field(default_factory=dict)
    windows: str = ""
    windows_from: str = ""

    def missing_weights(self) -> list[str]:
        """Missing model keys nothing explains (e.g. swin_t weights loaded into swin_s): random weights remain.

        Expected gaps are not listed: output norms classification weights never have, the decoder parts an
        ImageNet Swin lacks, BatchNorm step counters, an auxiliary head the checkpoint has none of.
        """
        return [key for key, why in self.missing if why.endswith(KEEPS_RANDOM_INIT)]

    def summary(self, limit: int = 3) -> str:
        """A few lines: counts, and the first ``limit`` keys of each kind (per reason for drops and gaps)."""
        if self.backbone_layout:
            what = f"{self.layout} {self.kind}, {self.backbone_layout} backbone"
        else:
            what = f"{self.layout}{'' if self.kind in ('', 'backbone') else ' ' + self.kind} layout"
        lines = [f"densekit: loaded {self.loaded} tensors ({what})" + (f" from {self.source}" if self.source else "")]
        groups = (
            ("renamed", [f"{a} -> {b}" for a, b in self.renamed]),
            ("resized", [f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in self.resized]),
            ("permuted", self.permuted),
            ("mirrored into the decoder", [f"{a} -> {b}" for a, b in self.mirrored]),
        )
        for name, items in groups:
            if items:
                lines.append(f"  {name} {len(items)}: {_first(items, limit)}")
        for name, pairs in (("dropped", self.dropped), ("missing", self.missing)):
            if pairs:
                lines.append(f"  {name} {len(pairs)}: " + "; ".join(
                    f"{len(keys)} {why} ({_first(keys, limit)})" for why, keys in _by_reason(pairs).items()))
        if self.windows:
            said = self.windows_from and self.windows_from not in self.windows
            source = f" (from {self.windows_from})" if said else ""
            lines.append(f"  windows: {self.windows}{source}")
        if self.missing_weights():
            lines.append(f"  WARNING: {len(self.missing_weights())} weights are not in the checkpoint and keep their "
                         "random initialisation (another variant's weights?)")
        return "\n".join(lines)


def _first(items: list[str], limit: int) -> str:
    more = f", ... (+{len(items) - limit})" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _by_reason(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {}
    for key, why in pairs:
        reasons.setdefault(why, []).append(key)
    return reasons
