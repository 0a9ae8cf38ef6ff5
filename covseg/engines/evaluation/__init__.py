"""The bundles' ``evaluate``: networks scored on labelled test slices with the papers' toolbox."""
