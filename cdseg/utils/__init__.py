"""Small helpers with no project dependencies (logging, atomic outputs, lazy imports)."""
