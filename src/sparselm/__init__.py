"""sparselm: efficient GPT pretraining through weight sparsity and subnetworks."""

__version__ = "0.1.0"
