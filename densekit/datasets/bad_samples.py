"""What a dataset does with a sample it cannot use: raise (default) or skip it, counted and reported.

Loading transforms and volume readers raise ``BadSampleError`` (unreadable or truncated file, unsupported
pixel type, image and mask of different sizes, label values out of range); a missing file is an
``OSError``. ``BadSampleMixin`` sits in front of ``mmengine.dataset.BaseDataset`` and

- with ``on_bad_sample='raise'`` re-raises the error with the dataset, the index and the file prepended;
- with ``on_bad_sample='skip'`` records ``skipped[path] = reason``, warns (``DatasetWarning``, naming the
  file and the running count) and returns None, so ``BaseDataset.__getitem__`` draws another index
  (``_rand_another``, at most ``max_refetch`` times).

In ``test_mode`` a bad sample always raises: metrics over a silently smaller set would mislead. With
dataloader workers, ``skipped`` fills in each worker's copy of the dataset; the warnings reach the log
from every worker.
"""
from __future__ import annotations

import warnings

from mmengine.dataset import BaseDataset

ON_BAD_SAMPLE = ("raise", "skip")
# What a bad-sample error adds for the user: the switch that turns the refusal into a counted skip.
SKIP_HINT = ("to skip such samples instead (counted, with a warning each), set on_bad_sample='skip' on the dataset, "
             "e.g. --cfg-options train_dataloader.dataset.on_bad_sample=skip")


class DatasetWarning(UserWarning):
    """Items a dataset skipped (counted, with examples)."""


class BadSampleError(ValueError):
    """A sample whose files exist but cannot be used; the message names the file and what was expected."""


class UnreadableFileError(OSError, BadSampleError):
    """A file that is not a decodable image (or is truncated); an ``OSError`` too, as a read failure."""


def check_on_bad_sample(value: str) -> str:
    if value not in ON_BAD_SAMPLE:
        raise ValueError(f"on_bad_sample must be one of {ON_BAD_SAMPLE}, got {value!r}")
    return value


class BadSampleMixin:
    """``prepare_data`` that raises with context or skips bad samples; set ``on_bad_sample`` and call
    ``super().__init__`` of a ``BaseDataset``. ``skipped`` maps each skipped file to the reason."""

    on_bad_sample: str = "raise"

    def _init_bad_samples(self, on_bad_sample: str) -> None:
        self.on_bad_sample = check_on_bad_sample(on_bad_sample)
        self.skipped: dict[str, str] = {}

    def bad_sample(self, path: str, reason: str, error_type: type[Exception] = BadSampleError) -> None:
        """Raise ``error_type(reason)``, or (``on_bad_sample='skip'``) record and warn about ``path``."""
        if self.on_bad_sample == "raise":
            raise error_type(reason)
        self.skipped[str(path)] = reason
        warnings.warn(f"{type(self).__name__}: skipped {path}: {reason} ({len(self.skipped)} skipped so far; "
                      "see dataset.skipped)", DatasetWarning, stacklevel=3)

    def check_sample(self, idx: int) -> None:
        """Load sample ``idx`` the way the pipeline starts (``get_data_info`` and the leading ``Load*``
        transforms, no augmentation) and raise its ``BadSampleError`` / ``OSError`` with the dataset, index and
        file prepended, so tools can find a bad file before training instead of in a dataloader worker."""
        try:
            results = self.get_data_info(idx)
            for transform in self.pipeline.transforms:
                if not type(transform).__name__.startswith("Load"):
                    break
                results = transform(results)
        except (BadSampleError, OSError) as error:
            info = BaseDataset.get_data_info(self, idx)
            path = info.get("img_path") or info.get("image_path") or info.get("path") or f"index {idx}"
            raise type(error)(f"{type(self).__name__}[{idx}] ({path}): {error}") from error

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except (BadSampleError, OSError) as error:
            # mmengine's own get_data_info: the file names, without loading arrays a subclass adds there.
            info = BaseDataset.get_data_info(self, idx)
            path = info.get("img_path") or info.get("image_path") or info.get("path") or f"index {idx}"
            message = f"{type(self).__name__}[{idx}] ({path}): {error}"
            if self.on_bad_sample == "raise" or self.test_mode:
                raise type(error)(message) from error
            self.bad_sample(path, str(error))
            return None
