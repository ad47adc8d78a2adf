"""The `semisup` command line: one module per command (`commands.process`: allocator)."""
