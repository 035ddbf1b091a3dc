"""DatasetNeRF Studio core: everything that runs without Qt."""
