"""preprocessing layer."""
