"""What every layout converter shares: key rules, the rule engine, and the load report.

A converter is a table of ``Rule`` rows plus ``apply_rules``: pure functions from one state dict
(``{key: tensor}``) to another, which record every key they rename, permute or drop, so that a
load can always say what happened to each tensor (DESIGN.md §6.8).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

StateDict = dict[str, torch.Tensor]
Tensors = Mapping[str, torch.Tensor]  # any read-only state dict
# A callable ``repl`` gets the match and the conversion context and returns the new key prefix,
# or None to drop the key (e.g. only the last of several out norms maps to the official ``norm``).
KeyFn = Callable[[re.Match, Mapping[str, object]], "str | None"]
ValueFn = Callable[[torch.Tensor], torch.Tensor]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, recognised, converted or loaded into the model."""


@dataclass(frozen=True)
class Rule:
    """One row of a key table.

    ``pattern`` is searched in the key (anchor it with ``^``/``$`` as needed) and the matched span
    is replaced by ``repl``: a ``re`` template (``\\1`` back-references) that may also name context
    values as ``{last}``, a ``KeyFn``, or None to drop the key. ``value`` rewrites the tensor too
    (e.g. a channel permutation). The first matching rule wins; keys no rule matches pass as they are.
    """

    pattern: str
    repl: str | KeyFn | None
    value: ValueFn | None = None
    why: str = ""


# Recomputable buffers (DESIGN.md §3), classifier heads and the non-backbone parts of a full
# segmentor checkpoint: no densekit backbone has them, in any layout.
DROP_RULES: tuple[Rule, ...] = (
    Rule(r"(^|\.)relative_position_index$", None, why="buffer, recomputed"),
    Rule(r"(^|\.)relative_coords_table$", None, why="buffer, recomputed"),
    Rule(r"(^|\.)attn_mask$", None, why="buffer, recomputed"),
    Rule(r"^(head|fc|classifier)\.", None, why="classifier head"),
    Rule(r"^(decode_head|auxiliary_head|neck|data_preprocessor)\.", None, why="not the backbone"),
)


@dataclass
class LoadReport:
    """What a conversion and load did, key by key.

    Attributes:
        layout: detected source layout (``'official'``, ``'timm'``, ``'mmseg'`` or ``'densekit'``).
        source: the checkpoint path.
        renamed: ``(source key, densekit key)`` pairs whose name changed.
        resized: ``(densekit key, source shape, new shape)`` for interpolated or adapted tensors.
        permuted: densekit keys whose values were reordered (mmseg patch-merging channels).
        dropped: source keys not loaded (buffers, heads, decode heads, norms the model lacks).
        missing: model keys the checkpoint did not provide (left at their initialisation).
        loaded: number of tensors copied into the model.
    """

    layout: str = ""
    source: str = ""
    renamed: list[tuple[str, str]] = field(default_factory=list)
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    permuted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    loaded: int = 0

    def missing_weights(self) -> list[str]:
        """Missing keys other than out norms: classification checkpoints never have ``out_norms.0-2``,
        but anything else missing (e.g. swin_t weights into swin_s) leaves random weights in the model."""
        return [key for key in self.missing if not key.startswith("out_norms.")]

    def summary(self, limit: int = 3) -> str:
        """A few lines: counts and the first ``limit`` names of each kind."""
        head = f"densekit: loaded {self.loaded} tensors ({self.layout} layout)"
        lines = [head + (f" from {self.source}" if self.source else "")]
        groups = (
            ("renamed", [f"{a} -> {b}" for a, b in self.renamed]),
            ("resized", [f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in self.resized]),
            ("permuted", self.permuted),
            ("dropped", self.dropped),
            ("missing", self.missing),
        )
        for name, items in groups:
            if items:
                more = f", ... (+{len(items) - limit})" if len(items) > limit else ""
                lines.append(f"  {name} {len(items)}: {', '.join(items[:limit])}{more}")
        if self.missing_weights():
            lines.append(f"  WARNING: {len(self.missing_weights())} weights besides out norms are not in the "
                         "checkpoint and keep their random initialisation (another variant's weights?)")
        return "\n".join(lines)


def _rename(rule: Rule, match: re.Match, key: str, context: Mapping[str, object]) -> str | None:
    """New key for ``key`` under ``rule`` (None: drop)."""
    if rule.repl is None:
        return None
    if callable(rule.repl):
        new = rule.repl(match, context)
    else:
        new = match.expand(rule.repl.format(**context))
    return None if new is None else key[: match.start()] + new + key[match.end():]


def _first_match(compiled: list[tuple[re.Pattern, Rule]], key: str) -> tuple[Rule | None, re.Match | None]:
    """The first rule whose pattern occurs in ``key``, with its match."""
    for pattern, rule in compiled:
        match = pattern.search(key)
        if match:
            return rule, match
    return None, None


def apply_rules(
    state_dict: Tensors,
    rules: Iterable[Rule],
    context: Mapping[str, object] | None = None,
    progress: bool = False,
    desc: str = "converting",
) -> tuple[StateDict, LoadReport]:
    """Apply a key table to a state dict.

    Args:
        state_dict: ``{key: tensor}`` in the source layout.
        rules: the table; the first rule whose pattern matches a key decides its fate.
        context: values the templates name, e.g. ``{'last': 3}``.
        progress: show a tqdm bar over the keys (hidden when stderr is not a terminal).

    Returns:
        The new state dict (tensors are shared unless a ``value`` function rewrote them) and a
        ``LoadReport`` with ``renamed``, ``permuted`` and ``dropped`` filled in.

    Raises:
        CheckpointError: two source keys map to the same new key.
    """
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    context = dict(context or {})
    out: StateDict = {}
    origin: dict[str, str] = {}
    report = LoadReport()
    items = tqdm(state_dict.items(), total=len(state_dict), desc=desc, leave=False, disable=None if progress else True)
    for key, value in items:
        rule, match = _first_match(compiled, key)
        new = key if rule is None or match is None else _rename(rule, match, key, context)
        if new is None:
            report.dropped.append(key)
            continue
        if new in out:
            raise CheckpointError(f"keys {origin[new]!r} and {key!r} both map to {new!r}")
        if rule is not None and rule.value is not None:
            value = rule.value(value)
            report.permuted.append(new)
        if new != key:
            report.renamed.append((key, new))
        out[new], origin[new] = value, key
    return out, report


def num_stages(state_dict: Tensors, prefix: str) -> int:
    """Stages in a Swin state dict: one more than the largest ``{prefix}.{i}.`` index (0 if none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    indices = [int(m.group(1)) for key in state_dict if (m := pattern.match(key))]
    return max(indices) + 1 if indices else 0
