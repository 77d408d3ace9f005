"""Per-side quality estimate: a predicted Dice and a review flag for each hippocampus."""
