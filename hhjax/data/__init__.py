"""Data: the synthetic generator, the manual-layout reader, the TFDS builder and the
input pipeline."""
