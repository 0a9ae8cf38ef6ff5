"""covseg.engines: the pytorch-ignite engines and what runs them, one role per subpackage.

- :mod:`covseg.engines.inference`: volume inference (inputs read and lung-masked, slices predicted, outputs
  exported, batches of volumes, the joint diagnosis, activation maps);
- :mod:`covseg.engines.runtime`: where and how a network runs (CPU precision, BatchNorm / ReLU fusion,
  ``torch.compile``'s cache, ONNX Runtime, a bundle's cached export and its shipped template);
- :mod:`covseg.engines.training`: supervised, semi-supervised and classifier training, with their seeding,
  sampling, priors and weight averaging;
- :mod:`covseg.engines.evaluation`: the bundles' ``evaluate`` on the labelled test slices (binary, multi-class).
"""
