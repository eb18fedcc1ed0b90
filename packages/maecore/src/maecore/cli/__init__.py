"""The shared command line builder and the core demo CLI."""
