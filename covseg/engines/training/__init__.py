"""Training on pytorch-ignite: supervised, semi-supervised and classifier training, seeded and resumable."""
