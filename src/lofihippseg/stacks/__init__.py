"""stacks layer: one low-field session's separate thick-slice stacks made into one case.

Modules: ``register`` (rigid registration of each stack to the first, SimpleITK), ``combine``
(the stacks averaged on a fine grid in the first stack's frame, or each stack's probabilities
fused there), ``session`` (loading, checks, the whole way from files to a combined volume).
See docs/stacks.md.
"""
