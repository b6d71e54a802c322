"""Semantic segmentation datasets (image and mask folders, ADE20K, the generated demo) and their transforms."""
