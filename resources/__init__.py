"""Data files the studio ships (the embedded default backbone); a package so a wheel carries them."""
