"""DatasetNeRF Studio desktop application (Qt only; talks to core/ through plain Python objects)."""
