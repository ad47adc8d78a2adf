"""Small `nn.Module`s that carry state in buffers: alignment, memory banks, heads, the EMA."""
