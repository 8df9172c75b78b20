"""data_tools package."""
