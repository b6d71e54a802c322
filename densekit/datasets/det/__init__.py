"""Detection datasets (COCO json, PASCAL VOC, the generated box demo) and their transforms."""
