"""Array operations that are not models: TV-L1 optical flow."""
