"""Engines for batch runs beyond one process (front doors over the Translator; none is imported by the library)."""
