"""The ``ssconv`` command line: one entry point, one module per subcommand, no logic of its own."""
