"""Command-line interface of the tark supervisor (`tark`)."""
