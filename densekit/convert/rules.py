"""Key tables: one ``Rule`` per row, ``apply_rules`` to run a table over a state dict, and the shared rows.

A converter is a table of ``Rule`` rows plus ``apply_rules``: pure functions from one state dict
(``{key: tensor}``) to another, which record every key they rename, permute or drop (with the rule's
reason), so that a load can always say what happened to each tensor (DESIGN.md §6.8).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from tqdm import tqdm

from .report import CheckpointError, LoadReport

StateDict = dict[str, torch.Tensor]
Tensors = Mapping[str, torch.Tensor]  # any read-only state dict
# A callable ``repl`` gets the match and the conversion context and returns the new key prefix,
# or None to drop the key (e.g. only the last of several out norms maps to the official ``norm``).
KeyFn = Callable[[re.Match, Mapping[str, object]], "str | None"]
ValueFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Rule:
    """One row of a key table.

    ``pattern`` is searched in the key (anchor it with ``^``/``$`` as needed) and the matched span
    is replaced by ``repl``: a ``re`` template (``\\1`` back-references) that may also name context
    values as ``{last}``, a ``KeyFn``, or None to drop the key. ``value`` rewrites the tensor too
    (e.g. a channel permutation). The first matching rule wins; keys no rule matches pass as they are.
    ``why`` is the reason a dropped key is reported with.
    """

    pattern: str
    repl: str | KeyFn | None
    value: ValueFn | None = None
    why: str = ""


# Buffers densekit recomputes and never stores (DESIGN.md §3), in any layout.
BUFFER_RULES: tuple[Rule, ...] = (
    Rule(r"(^|\.)relative_position_index$", None, why="buffer, recomputed"),
    Rule(r"(^|\.)relative_coords_table$", None, why="buffer, recomputed"),
    Rule(r"(^|\.)attn_mask$", None, why="buffer, recomputed"),
)
# Besides the buffers, classifier heads and the non-backbone parts of a whole segmentor checkpoint:
# no densekit backbone has them, in any layout.
DROP_RULES: tuple[Rule, ...] = BUFFER_RULES + (
    Rule(r"^(head|fc|classifier)\.", None, why="classifier head"),
    Rule(r"^(decode_head|auxiliary_head|neck|data_preprocessor)\.", None, why="not the backbone"),
)


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
        ``LoadReport`` with ``renamed``, ``permuted`` and ``dropped`` (``(key, rule.why)``) filled in.

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
            report.dropped.append((key, rule.why or "dropped by the key table"))
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


def with_prefix(state_dict: Tensors, prefix: str) -> StateDict:
    """Every key of ``state_dict`` with ``prefix`` in front (tensors shared)."""
    return {prefix + key: value for key, value in state_dict.items()}


def part(state_dict: Tensors, prefix: str) -> StateDict:
    """The keys under ``prefix`` (e.g. a whole model's ``backbone.``), with the prefix removed."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
