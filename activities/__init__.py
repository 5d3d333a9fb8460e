"""Activity functions: each does one I/O step with small JSON in and out."""
