"""The `semisup` command line: one module per command."""
