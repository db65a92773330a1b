"""An example pt-engine plugin package: a CSV sink and an analyser."""
