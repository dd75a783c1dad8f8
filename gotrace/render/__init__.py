"""One renderer per output kind: rich tables for people, JSON lines for pipes."""
