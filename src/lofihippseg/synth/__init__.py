"""synth layer: synthetic low-field T2 images with exact hippocampus labels from label maps.

Modules: ``config`` (every parameter range), ``generator`` (``SyntheticGenerator``),
``acquisition`` (k-space low-field stack model), ``labelmaps`` (loading), ``assets`` (packaged
maps), ``dataset`` (LISA-layout writer and previews). See docs/synth.md.
"""
