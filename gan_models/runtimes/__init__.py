"""Inference runtimes (backends), CPU detection and the choice between them."""
