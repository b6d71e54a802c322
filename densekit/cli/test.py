"""Evaluate a checkpoint on a config's test set (mIoU; per-organ DSC/HD95 for medical configs; proposal
average recall AR@100/300/1000 for RPN configs).

Examples:
    python tools/test.py configs/upernet_swin_t_ade.py work_dirs/upernet_swin_t_ade/iter_160000.pth
    python tools/test.py configs/upernet_swin_t_demo.py work_dirs/demo/iter_200.pth --tta --out-dir overlays
    python tools/test.py configs/swin_unet_t_synapse.py work_dirs/swin_unet_t_synapse/epoch_150.pth \
        --protocol swin-unet --out-dir preds      # per-case CSV and <case>_pred.nii.gz
    python tools/test.py configs/rpn_regnetx_002_fpn_demo.py work_dirs/rpn_regnetx_002_fpn_demo/iter_300.pth \
        --out-dir proposals                       # the top 20 proposals drawn on each test image
"""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

from densekit.cli.common import add_launcher_arguments, add_no_accel_argument, add_unsafe_load_argument, run_tool
from densekit.engine.config import load_config
from densekit.engine.data_check import check_datasets
from densekit.engine.runner import test
from densekit.inference.checkpoint import check_checkpoint_fits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="densekit test", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--work-dir")
    parser.add_argument("--tta", action="store_true", help="flip + scales 0.5..1.75, softmax-averaged")
    parser.add_argument("--out-dir", help="segmentation: a colour overlay PNG per test image; medical: the "
                        "DSC/HD95 CSV and a NIfTI prediction per case (source affine); RPN: the top proposals "
                        "(and ground-truth boxes in white) drawn on each test image")
    parser.add_argument("--protocol", choices=["densekit", "swin-unet"],
                        help="medical configs: 'swin-unet' reproduces the official table (HD95 in voxels)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    add_unsafe_load_argument(parser)
    add_no_accel_argument(parser)
    add_launcher_arguments(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    check_datasets(cfg, ("test_dataloader",))  # fail before building the model
    # mmengine's load_from is non-strict: a checkpoint of another model would silently evaluate random weights.
    check_checkpoint_fits(cfg, args.checkpoint, unsafe_load=args.unsafe_load)
    medical = cfg.get("test_evaluator", {}).get("type") == "MedicalMetric"
    if args.protocol:
        if not medical:
            raise SystemExit("--protocol applies to configs whose test_evaluator is MedicalMetric")
        cfg.test_evaluator.protocol = args.protocol
    if args.tta and cfg.model.get("type") == "RPN":
        raise SystemExit("--tta applies to segmentation configs; RPN configs have no test-time augmentation")
    if args.out_dir and medical:
        cfg.test_evaluator.update(output_dir=args.out_dir, save_predictions=True)
    elif args.out_dir:
        hook = "DetProposalHook" if cfg.model.get("type") == "RPN" else "SegOverlayHook"
        cfg.custom_hooks = list(cfg.get("custom_hooks", [])) + [dict(type=hook, out_dir=args.out_dir)]
    metrics = test(cfg, args.checkpoint, work_dir=args.work_dir, tta=args.tta, launcher=args.launcher,
                   unsafe_load=args.unsafe_load, accel=False if args.no_accel else None)
    print({k: round(float(v), 4) for k, v in metrics.items()})


if __name__ == "__main__":
    run_tool(main)
