"""Training a model on prepared data, evaluating and exporting it, locally or through torchrun / PyTorchJob."""
