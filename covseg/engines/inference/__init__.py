"""Volume inference: inputs read and lung-masked, slices predicted, outputs exported; the joint diagnosis."""
