"""Medical volumes as 2-D slices (Synapse npz/h5, NIfTI), their transforms and resizing."""
