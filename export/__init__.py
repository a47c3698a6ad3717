"""`python -m export`: a thin command line over the library's export code in `gan_models.runtimes.onnx_export`."""
