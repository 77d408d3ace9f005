"""The recipe of the default model, as code: stages from the data to the bundle and its card.

``release/recipe.toml`` declares the stages (data pools, localiser, the two pairs of networks,
the outline refiner's data and network, the quality estimator, export, card);
``lofihippseg.recipe.campaign`` runs them as a resumable campaign (``make model``; ``make
model-smoke`` at toy scale); each stage's code is an ordinary module here (``pools``, ``msd``,
``pairs``, ``localiser``, ``refiner_data``, ``refiner_training``, ``card``; the quality
estimator's fitting: ``quality_data``, ``quality_degrade``, ``quality_fit``).
"""
