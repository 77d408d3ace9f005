"""Per-side quality estimate: a predicted Dice and a review flag for each hippocampus.

Only what predict reads at run time lives here (``features``, ``estimator``, ``assess``), below
``inference``: nothing in this package imports ``inference``, ``training``, ``recipe`` or
``cli``. Fitting the estimator (its table of predictions, the degradations, the trees) runs
predict, so it belongs with the recipe: ``lofihippseg.recipe.quality_data``,
``recipe.quality_degrade`` and ``recipe.quality_fit`` (``tests/test_layering.py`` holds it).
"""
