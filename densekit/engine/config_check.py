"""Find misspelt config keys anywhere in a config before anything is built, and name the nearest valid key.

Without this, ``train_cfg.max_iter`` surfaces as mmengine's ``TypeError: IterBasedTrainLoop.__init__() got an
unexpected keyword argument``, ``default_hooks.checkpoint.intreval`` as a ``TypeError`` from
``Runner.save_checkpoint`` (``CheckpointHook`` passes arguments it does not know on to it), ``model.decode_haed``
as "missing 1 required positional argument", and a misspelt top-level key (``trian_cfg``) is silently ignored.

``check_config`` reads the config the way mmengine's Runner builds it. Each dict is checked against what receives
it (its ``Section``): the class its ``type`` names in a registry (or the class the Runner picks when it names
none) or a fixed callable, less the arguments the builder passes itself, plus the keys the builder takes out
first. Where the receiver takes ``**kwargs``, ``KWARGS_GO_TO`` says where they go and the check follows them;
where that is unknown (a ``**kwargs`` the table lacks, a type no registry has) the dict is not checked and the
build reports what it must. Only key names are checked here, not their values.
"""
from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

import torch.distributed
from mmengine.dist import init_dist
from mmengine.hooks import CheckpointHook, EMAHook
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import AmpOptimWrapper, ApexOptimWrapper, DefaultOptimWrapperConstructor
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.momentum_scheduler import MomentumSchedulerMixin
from mmengine.registry import Registry
from mmengine.runner import Runner
from mmengine.utils.dl_utils import set_multi_processing
from torch.nn.utils import clip_grad_norm_, clip_grad_value_
from torch.utils.data import DataLoader

from ..models.losses import check_loss_decode
from ..registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS, get_backbone_builder, mmengine_child


class ConfigError(ValueError):
    """A config that cannot work (a wrong key, a missing section), said in one sentence; the tools print it as
    one ``error:`` line (``densekit.cli.common.run_tool``)."""


# What the Runner reads: Runner.from_cfg's keys, then the keys it reads from the config itself.
_RUNNER_KEYS = {
    "model", "work_dir", "train_dataloader", "val_dataloader", "test_dataloader", "train_cfg", "val_cfg",
    "test_cfg", "auto_scale_lr", "optim_wrapper", "param_scheduler", "val_evaluator", "test_evaluator",
    "default_hooks", "custom_hooks", "data_preprocessor", "load_from", "resume", "launcher", "env_cfg",
    "log_processor", "log_level", "visualizer", "default_scope", "randomness", "experiment_name",
    "model_wrapper_cfg", "find_unused_parameters", "sync_bn", "compile", "activation_checkpointing",
    "efficient_conv_bn_eval",
}
TOP_LEVEL_KEYS = frozenset(_RUNNER_KEYS | {
    "custom_imports",  # mmengine.Config imports these modules
    # mmsegmentation-style flat configs
    "train_pipeline", "val_pipeline", "test_pipeline", "tta_pipeline", "tta_model", "dataset_type", "data_root",
    "accel",  # densekit: True turns on densekit.accel's CPU fast paths for training
})
# Runner.register_default_hooks adds these unless the config names them (None removes one).
DEFAULT_HOOK_NAMES = frozenset({"runtime_info", "timer", "sampler_seed", "logger", "param_scheduler", "checkpoint"})
# DefaultOptimWrapperConstructor's documented paramwise_cfg keys (custom_keys' entries go to the param groups).
DEFAULT_PARAMWISE_KEYS = frozenset({"custom_keys", "bias_lr_mult", "bias_decay_mult", "norm_decay_mult",
                                    "dwconv_decay_mult", "flat_decay_mult", "dcn_offset_lr_mult",
                                    "bypass_duplicate"})
# Keys the registry itself reads from a typed dict.
_REGISTRY_KEYS = frozenset({"type", "_scope_"})
# Keys a model takes out of a child's dict (under ``model``) and uses itself: a head's loss_decode (a typed dict
# or a list of them, each checked in turn against its class in MODELS) and ignore_index, mmseg's head keys that
# the segmentors pop for the head's loss stack.
_PARENT_KEYS = frozenset({"loss_decode", "ignore_index"})


@dataclass(frozen=True)
class Forward:
    """Where a callable's ``**kwargs`` go: ``to(owner, cfg)`` is the callable receiving them (None: unknown);
    ``passed`` are the arguments the owner fills in itself, so they are not config keys."""

    to: Callable[[Callable, Mapping], Callable | None]
    passed: frozenset[str] = frozenset()


def _next_class(owner: type) -> Callable[[type, Mapping], type]:
    """``super().__init__(**kwargs)``: the class after ``owner`` in the built class's MRO."""
    return lambda cls, cfg: cls.__mro__[cls.__mro__.index(owner) + 1]


def _ema_model(kind: object) -> Callable | None:
    """EMAHook builds ``dict(type=ema_type, **kwargs)`` from MODELS."""
    if isinstance(kind, str):
        return MODELS.get(kind)
    return kind if callable(kind) else None


_SAVE_CHECKPOINT_ARGS = frozenset({"out_dir", "filename", "file_client_args", "save_optimizer",
                                   "save_param_scheduler", "meta", "by_epoch", "backend_args"})
# The **kwargs of mmengine's classes that take them, keyed by the class (or function) that declares them.
KWARGS_GO_TO: dict[Callable, Forward] = {
    # runner.save_checkpoint(..., **kwargs), after the arguments the hook fills in (today: all of them).
    CheckpointHook: Forward(lambda cls, cfg: Runner.save_checkpoint, _SAVE_CHECKPOINT_ARGS),
    EMAHook: Forward(lambda cls, cfg: _ema_model(cfg.get("ema_type", "ExponentialMovingAverage")),
                     frozenset({"model"})),
    AmpOptimWrapper: Forward(_next_class(AmpOptimWrapper)),
    ApexOptimWrapper: Forward(_next_class(ApexOptimWrapper)),
    # LinearLR(optimizer, **kwargs) -> LinearParamScheduler(optimizer, "lr", **kwargs); momentum likewise.
    LRSchedulerMixin: Forward(_next_class(LRSchedulerMixin), frozenset({"optimizer", "param_name"})),
    MomentumSchedulerMixin: Forward(_next_class(MomentumSchedulerMixin), frozenset({"optimizer", "param_name"})),
    MMDistributedDataParallel: Forward(_next_class(MMDistributedDataParallel), frozenset({"module"})),
    # env_cfg.dist_cfg: init_dist(launcher, backend, init_backend, **kwargs) -> torch's init_process_group.
    init_dist: Forward(lambda fn, cfg: torch.distributed.init_process_group
                       if cfg.get("init_backend", "torch") == "torch" else None, frozenset({"backend"})),
}


@dataclass(frozen=True)
class Section:
    """One kind of config dict and what receives it.

    ``call`` takes the dict's keys as keyword arguments, or ``registry`` resolves its ``type`` (``default`` when
    it names none: the class the Runner picks); a fixed vocabulary (``owner`` names it) has neither.
    ``injected``: arguments the builder passes itself, not config keys; ``extra``: keys it takes out first.
    """

    owner: str = ""
    call: Callable | None = None
    registry: Registry | None = None
    default: str | None = None
    injected: frozenset[str] = frozenset()
    extra: frozenset[str] = frozenset()


_LOOPS = mmengine_child("LOOPS")
_LOOP_ARGS = frozenset({"runner", "dataloader", "evaluator"})  # Runner.build_*_loop passes them
SECTIONS: dict[str, Section] = {
    "val_cfg": Section(registry=_LOOPS, default="ValLoop", injected=_LOOP_ARGS),
    "test_cfg": Section(registry=_LOOPS, default="TestLoop", injected=_LOOP_ARGS),
    "hook": Section(registry=HOOKS, extra=frozenset({"priority"})),  # Runner.register_hook takes it out
    "optim_wrapper": Section(registry=mmengine_child("OPTIM_WRAPPERS"), default="OptimWrapper",
                             extra=frozenset({"constructor", "paramwise_cfg"})),  # build_optim_wrapper's
    "optimizer": Section(registry=mmengine_child("OPTIMIZERS"), injected=frozenset({"params"})),
    "paramwise_cfg": Section(owner="DefaultOptimWrapperConstructor's paramwise_cfg", extra=DEFAULT_PARAMWISE_KEYS),
    "param_scheduler": Section(registry=mmengine_child("PARAM_SCHEDULERS"),
                               injected=frozenset({"optimizer", "epoch_length"}),
                               extra=frozenset({"convert_to_iter_based"})),  # build_scheduler_from_cfg's
    "log_processor": Section(registry=mmengine_child("LOG_PROCESSORS"), default="LogProcessor"),
    "visualizer": Section(registry=mmengine_child("VISUALIZERS")),
    "vis_backend": Section(registry=mmengine_child("VISBACKENDS")),
    "model_wrapper_cfg": Section(registry=mmengine_child("MODEL_WRAPPERS"), default="MMDistributedDataParallel",
                                 injected=frozenset({"module"})),
    "env_cfg": Section(owner="Runner.setup_env's env_cfg",
                       extra=frozenset({"cudnn_benchmark", "mp_cfg", "dist_cfg", "resource_limit"})),
    "mp_cfg": Section(call=set_multi_processing, injected=frozenset({"distributed"})),
    "dist_cfg": Section(call=init_dist, injected=frozenset({"launcher"}), extra=frozenset({"port"})),  # Slurm's
    "randomness": Section(call=Runner.set_randomness),
    "auto_scale_lr": Section(owner="Runner.scale_lr's auto_scale_lr", extra=frozenset({"base_batch_size", "enable"})),
    # Runner.build_dataloader takes these out before calling DataLoader(**rest).
    "dataloader": Section(call=DataLoader, extra=frozenset({
        "dataset", "sampler", "batch_sampler", "collate_fn", "worker_init_fn", "num_batch_per_epoch",
        "disable_subprocess_warning"})),
    "sampler": Section(registry=mmengine_child("DATA_SAMPLERS"), injected=frozenset({"dataset"})),
    "batch_sampler": Section(registry=mmengine_child("DATA_SAMPLERS"),
                             injected=frozenset({"sampler", "batch_size"})),
}


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown(where: str, key: str, owner: str, valid: Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    return ConfigError(f"config key {where}.{key}: {owner} has no argument {key!r}{_suggest(key, valid)} "
                       f"(valid: {', '.join(valid)})")


def _forward(target: Callable) -> Forward | None:
    """The ``KWARGS_GO_TO`` entry of the code that declares ``target``'s ``**kwargs``."""
    if inspect.isclass(target):
        target = next(c for c in target.__mro__ if "__init__" in vars(c))
    return KWARGS_GO_TO.get(target)


def _accepted(target: Callable, cfg: Mapping) -> set[str] | None:
    """Keyword names ``target`` accepts, following ``**kwargs`` through ``KWARGS_GO_TO``; None where they go
    somewhere unknown (then any key may be right)."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {p.name for p in params if p.kind in named} - {"self"}
    if all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in params):
        return names
    forward = _forward(target)
    onward = forward.to(target, cfg) if forward is not None else None
    further = _accepted(onward, cfg) if onward is not None else None
    return None if further is None else names | (further - forward.passed)


def _backbone_parameters(name: str) -> set[str] | None:
    """A densekit backbone builder's arguments plus, where it forwards ``**kwargs`` to the class its return
    annotation names (``swin_t(...) -> SwinTransformer``), that class's; None for timm names."""
    builder = get_backbone_builder(name)
    if builder is None:
        return None
    own = _accepted(builder, {})
    if own is not None:
        return own
    try:
        returned = typing.get_type_hints(builder).get("return")
    except Exception:  # unresolvable annotations: no check rather than a false alarm
        return None
    target = _accepted(returned, {}) if inspect.isclass(returned) else None
    if target is None:
        return None
    params = inspect.signature(builder).parameters.values()
    return target | {p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD}


def _receiver(cfg: Mapping, section: Section) -> tuple[Callable | None, str]:
    """What ``cfg`` is given to and its name for the message."""
    if section.registry is None:
        return section.call, getattr(section.call, "__qualname__", section.owner)
    kind = cfg.get("type", section.default)
    if isinstance(kind, str):
        return section.registry.get(kind), kind
    return (kind, getattr(kind, "__name__", repr(kind))) if callable(kind) else (None, "")


def _valid_keys(cfg: Mapping, section: Section) -> tuple[str, set[str]] | None:
    """Who receives ``cfg`` and the keys it may hold; None where that is unknown."""
    if section.call is None and section.registry is None:
        return section.owner, set(section.extra)
    receiver, owner = _receiver(cfg, section)
    accepted = _accepted(receiver, cfg) if receiver is not None else None
    if accepted is None:
        return None
    own = _REGISTRY_KEYS if section.registry is not None else frozenset()
    return owner, (accepted - section.injected) | section.extra | own


def _check_keys(cfg: Mapping, where: str, owner: str, valid: set[str]) -> None:
    for key in cfg:
        if key not in valid:
            raise _unknown(where, key, owner, valid - _REGISTRY_KEYS)


def _check_section(cfg: object, where: str, section: Section) -> None:
    """Raise ``ConfigError`` for the first key of the dict ``cfg`` that ``section``'s receiver does not take."""
    found = _valid_keys(cfg, section) if isinstance(cfg, Mapping) else None
    if found is not None:
        _check_keys(cfg, where, *found)


def _check_typed(cfg: Mapping, where: str, registry: Registry, nested: Registry | None = None) -> None:
    """A typed dict against its class in ``registry``, then every typed dict it holds (a model's backbone, heads
    and losses; a dataset's pipeline) against ``nested`` (``registry`` by default)."""
    kind = cfg.get("type")
    parent_keys = _PARENT_KEYS if registry is MODELS else frozenset()
    if where.endswith(".backbone") and isinstance(kind, str):
        valid = _backbone_parameters(kind)
        if valid is not None:
            _check_keys(cfg, where, kind, valid | _REGISTRY_KEYS)
    else:
        _check_section(cfg, where, Section(registry=registry, extra=parent_keys))
    for key, value in cfg.items():
        if key == "loss_decode" and registry is MODELS:
            _check_losses(value, f"{where}.{key}")
        else:
            _check_value(value, f"{where}.{key}", nested or registry)


def _check_losses(value: object, where: str) -> None:
    """A head's ``loss_decode``: its types and arguments as the segmentor's loss stack will read them, refused here
    (before the Runner makes a work dir) with the key at fault."""
    try:
        check_loss_decode(value, where)
    except ValueError as error:
        raise ConfigError(f"config key {error}") from error


def _check_value(value: object, where: str, registry: Registry) -> None:
    """Every typed dict in ``value`` (at any depth, through plain dicts and lists) against ``registry``."""
    if isinstance(value, Mapping) and "type" in value:
        _check_typed(value, where, registry)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_value(item, f"{where}.{key}", registry)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, f"{where}[{i}]", registry)


def _check_known_name(key: str, known: Iterable[str], what: str, where: str = "") -> None:
    """An unknown name close to a known one (difflib ratio >= 0.8) is a misspelling of it; others are allowed
    (flat configs' helper variables such as ``crop_size``, custom hook names such as ``visualization``)."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
    if key not in known and close:
        shown = f"{where}.{key}" if where else repr(key)
        raise ConfigError(f"config key {shown} is not {what}; did you mean {close[0]!r}?")


def check_top_level(keys: Iterable[str]) -> None:
    """A top-level key close to one the Runner (or densekit) reads is a misspelling of it, whether or not the
    config has that key too (``--cfg-options trian_cfg.max_iters=2`` adds ``trian_cfg`` beside ``train_cfg``)."""
    for key in sorted(keys):
        _check_known_name(key, TOP_LEVEL_KEYS, "a config key the Runner reads")


def _check_dataloader(cfg: object, where: str) -> None:
    """Runner.build_dataloader: the DataLoader's arguments, its sampler(s), and the dataset with its pipeline."""
    if not isinstance(cfg, Mapping):
        return
    _check_section(cfg, where, SECTIONS["dataloader"])
    for key in ("sampler", "batch_sampler"):
        _check_section(cfg.get(key), f"{where}.{key}", SECTIONS[key])
    if isinstance(cfg.get("dataset"), Mapping):
        _check_typed(cfg["dataset"], f"{where}.dataset", DATASETS, nested=TRANSFORMS)


def _check_train_loop(cfg: object, where: str) -> None:
    """Runner.build_train_loop: the ``type`` from LOOPS or, without one, ``by_epoch`` (taken out) picks
    EpochBasedTrainLoop or IterBasedTrainLoop."""
    if not isinstance(cfg, Mapping):
        return
    if "type" in cfg:
        section = Section(registry=_LOOPS, injected=_LOOP_ARGS)
    else:
        default = "EpochBasedTrainLoop" if cfg.get("by_epoch") else "IterBasedTrainLoop"
        section = Section(registry=_LOOPS, default=default, injected=_LOOP_ARGS, extra=frozenset({"by_epoch"}))
    _check_section(cfg, where, section)


def _check_default_hooks(cfg: object, where: str) -> None:
    """``name: typed dict or None``; a name close to one of mmengine's default hooks is a misspelling of it (it
    would add a second hook beside the default instead of configuring it)."""
    if not isinstance(cfg, Mapping):
        return
    for name, hook in cfg.items():
        _check_known_name(name, DEFAULT_HOOK_NAMES, "one of mmengine's default hooks", where)
        _check_section(hook, f"{where}.{name}", SECTIONS["hook"])


def _check_custom_hooks(cfg: object, where: str) -> None:
    for i, hook in enumerate(cfg if isinstance(cfg, (list, tuple)) else []):
        _check_section(hook, f"{where}[{i}]", SECTIONS["hook"])


def _check_optim_wrapper(cfg: object, where: str) -> None:
    """mmengine's build_optim_wrapper: ``constructor`` and ``paramwise_cfg`` go to the constructor, the rest to
    the wrapper class; ``optimizer`` holds a torch optimizer's arguments, ``clip_grad`` torch's clip function's.
    A constructor that is not DefaultOptimWrapperConstructor's kind reads the dict its own way: not checked."""
    if not isinstance(cfg, Mapping):
        return
    constructor = cfg.get("constructor", "DefaultOptimWrapperConstructor")
    if isinstance(constructor, str):
        constructor = mmengine_child("OPTIM_WRAPPER_CONSTRUCTORS").get(constructor)
    if not (inspect.isclass(constructor) and issubclass(constructor, DefaultOptimWrapperConstructor)):
        return
    _check_section(cfg, where, SECTIONS["optim_wrapper"])
    _check_section(cfg.get("optimizer"), f"{where}.optimizer", SECTIONS["optimizer"])
    clip = cfg.get("clip_grad")
    if isinstance(clip, Mapping):
        clip_fn = clip_grad_value_ if clip.get("type") == "value" else clip_grad_norm_
        section = Section(call=clip_fn, injected=frozenset({"parameters"}), extra=frozenset({"type"}))
        _check_section(clip, f"{where}.clip_grad", section)
    if constructor is DefaultOptimWrapperConstructor:  # subclasses read their own paramwise keys
        _check_section(cfg.get("paramwise_cfg"), f"{where}.paramwise_cfg", SECTIONS["paramwise_cfg"])
    elif hasattr(constructor, "check_paramwise_cfg"):  # densekit's lr-decay constructors (engine/optim.py)
        try:
            constructor.check_paramwise_cfg(dict(cfg.get("paramwise_cfg") or {}))
        except ValueError as error:
            raise ConfigError(f"config key {where}.paramwise_cfg: {error}") from error


def _check_schedulers(cfg: object, where: str) -> None:
    """A scheduler dict, a list of them, or (for several optimizers) a dict of those by optimizer name."""
    if isinstance(cfg, Mapping) and "type" not in cfg:
        for name, schedulers in cfg.items():
            _check_schedulers(schedulers, f"{where}.{name}")
    elif isinstance(cfg, (list, tuple)):
        for i, scheduler in enumerate(cfg):
            _check_section(scheduler, f"{where}[{i}]", SECTIONS["param_scheduler"])
    else:
        _check_section(cfg, where, SECTIONS["param_scheduler"])


def _check_env(cfg: object, where: str) -> None:
    _check_section(cfg, where, SECTIONS["env_cfg"])
    for key in ("mp_cfg", "dist_cfg"):
        _check_section(cfg.get(key) if isinstance(cfg, Mapping) else None, f"{where}.{key}", SECTIONS[key])


def _check_visualizer(cfg: object, where: str) -> None:
    _check_section(cfg, where, SECTIONS["visualizer"])
    backends = cfg.get("vis_backends") if isinstance(cfg, Mapping) else None
    for i, backend in enumerate(backends if isinstance(backends, (list, tuple)) else []):
        _check_section(backend, f"{where}.vis_backends[{i}]", SECTIONS["vis_backend"])


def _typed(registry: Registry) -> Callable[[object, str], None]:
    return lambda value, where: _check_value(value, where, registry)


# Each top-level key the check reads and how; read in this order, the first misspelt key is reported.
_CHECKS: tuple[tuple[str, Callable[[object, str], None]], ...] = (
    ("model", _typed(MODELS)),
    ("data_preprocessor", _typed(MODELS)),
    ("tta_model", _typed(MODELS)),
    ("train_dataloader", _check_dataloader),
    ("val_dataloader", _check_dataloader),
    ("test_dataloader", _check_dataloader),
    ("train_pipeline", _typed(TRANSFORMS)),
    ("val_pipeline", _typed(TRANSFORMS)),
    ("test_pipeline", _typed(TRANSFORMS)),
    ("tta_pipeline", _typed(TRANSFORMS)),
    ("val_evaluator", _typed(METRICS)),
    ("test_evaluator", _typed(METRICS)),
    ("train_cfg", _check_train_loop),
    ("val_cfg", partial(_check_section, section=SECTIONS["val_cfg"])),
    ("test_cfg", partial(_check_section, section=SECTIONS["test_cfg"])),
    ("default_hooks", _check_default_hooks),
    ("custom_hooks", _check_custom_hooks),
    ("optim_wrapper", _check_optim_wrapper),
    ("param_scheduler", _check_schedulers),
    ("env_cfg", _check_env),
    ("randomness", partial(_check_section, section=SECTIONS["randomness"])),
    ("auto_scale_lr", partial(_check_section, section=SECTIONS["auto_scale_lr"])),
    ("log_processor", partial(_check_section, section=SECTIONS["log_processor"])),
    ("visualizer", _check_visualizer),
    ("model_wrapper_cfg", partial(_check_section, section=SECTIONS["model_wrapper_cfg"])),
)


def check_config(cfg: Mapping) -> None:
    """Raise ``ConfigError`` naming the first misspelt key (dotted path) and the nearest valid name."""
    check_top_level(cfg.keys())
    for key, check in _CHECKS:
        check(cfg.get(key), key)
