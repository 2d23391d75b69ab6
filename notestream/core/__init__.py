"""The base layer: the error root, the settings object, logging and topic names."""
