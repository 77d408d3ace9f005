"""End-to-end workflows that chain the layers below (synth -> train -> predict -> evaluate)."""
