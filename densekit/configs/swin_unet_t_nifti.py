# Swin-Unet (tiny) on a folder of NIfTI volumes of your own, Medical Segmentation Decathlon layout:
#   my_volumes/imagesTr/*.nii.gz   my_volumes/labelsTr/*.nii.gz (same names)   my_volumes/dataset.json (optional:
#   its "labels" name the classes; else classes.txt, one per line, background first, or --classes)
# Axial slices at 224x224, the official Swin-Unet recipe otherwise (configs/swin_unet_t_synapse.py).
#   densekit train swin_unet_t_nifti --data my_volumes --work-dir work_dirs/my_volumes
# With --data the last case (by name) validates and the others train, and the head follows the classes.
# The intensity window is the dataset's: "ct" ([-125, 275] HU -> [0, 1]), "mr" (each volume's 0.5..99.5
# percentiles) or an explicit range, e.g. --cfg-options train_dataloader.dataset.window=mr
# (or "train_dataloader.dataset.window=[0,1000]"); inference uses the same window.
_base_ = "swin_unet_t_synapse.py"

data_root = "data/my_volumes"
classes = ("background", "foreground")  # --data reads dataset.json / classes.txt instead
window = "ct"
max_epochs = 50

model = dict(decode_head=dict(num_classes=len(classes)))
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(_delete_=True, type="NiftiSliceDataset", data_root=data_root, classes=classes, window=window,
                 pipeline=[dict(type="RandomGenerator", output_size=(224, 224)), dict(type="PackMedicalInputs")]),
)
val_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(_delete_=True, type="NiftiSliceDataset", data_root=data_root, classes=classes, window=window,
                 test_mode=True,
                 pipeline=[dict(type="ResizeSlice", output_size=(224, 224)), dict(type="PackMedicalInputs")]),
)
test_dataloader = val_dataloader
param_scheduler = [
    dict(type="PolyLR", power=0.9, eta_min=0.0, by_epoch=True, begin=0, end=max_epochs, convert_to_iter_based=True)
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=10)
default_hooks = dict(checkpoint=dict(interval=10))
